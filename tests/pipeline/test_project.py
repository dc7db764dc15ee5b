"""A profile written out as a project of its own: what DVC and the flow read there."""
import yaml

from components.config import load_config
from components.pipeline.project import write_project
from tests.conftest import REPO


def test_the_active_profile_is_written_in_full(tmp_path):
    project = write_project(tmp_path / "p", "micro", with_code=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["profile"] == "micro" and "extends" not in params["micro"]
    # every section DVC tracks for a stage is a key of the block, with micro's values and tiny's for the rest
    assert params["micro"]["model"]["hidden_size"] == 64 and params["micro"]["quality"] == params["tiny"]["quality"]
    assert load_config(project / "params.yaml") == load_config(REPO / "params.yaml", "micro")
    assert (project / "dvc.yaml").read_text() == (REPO / "dvc.yaml").read_text()
    assert (project / "components/config.py").exists() and (project / "releases").is_dir()
    assert not list(project.rglob("__pycache__"))
