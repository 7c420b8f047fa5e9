"""Write workflows/NAME.yaml, the `lpad add`-ready form of each campaign config in configs/.

    .venv/bin/python scripts/write_workflows.py

The test suite checks that the files match the configs; rerun this after changing a config.
"""

from pathlib import Path

import yaml

from mfal.campaign import workflow_file_document
from mfal.config import config_from_dict, read_config_document

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN_CONFIGS = ("h3_pyqmc", "mos2_surrogate", "mos2_qmcpack")


def main() -> None:
    for name in CAMPAIGN_CONFIGS:
        source = ROOT / "configs" / f"{name}.yaml"
        document = read_config_document(source)
        config = config_from_dict(document, base_dir=source.parent, source=str(source))
        target = ROOT / "workflows" / f"{name}.yaml"
        header = f"# lpad add {target.relative_to(ROOT)}  (generated from configs/{name}.yaml by scripts/write_workflows.py)\n"
        target.write_text(header + yaml.safe_dump(workflow_file_document(config, document), sort_keys=False))
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
