"""The s1-32b Ray cluster config would boot: Ray's own schema and config preparation (what `ray up` runs before it
launches anything), its AWS network-interface bootstrap, and the project's checks: a pinned Python 3.11 image with
the project's pins, 32 EFA interfaces per p5 node, and the resources the training workers ask for."""
import json
import re
import tomllib
from importlib.metadata import version

import yaml

from components.config import parse_profile
from tests.conftest import REPO

CLUSTER = REPO / "infra/ray/cluster-h100.yaml"
DOCKERFILE = REPO / "infra/ray/Dockerfile"


def _cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def _s1_32b():
    return parse_profile(yaml.safe_load((REPO / "params.yaml").read_text())["s1-32b"], "s1-32b")


def test_rays_own_validation_accepts_it():
    from ray.autoscaler._private.aws.config import _configure_subnets_and_groups_from_network_interfaces
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = prepare_config(_cluster())  # defaults merged, docker config checked, min/max workers filled
    validate_config(config)               # ray/autoscaler/ray-schema.json
    for node_type in config["available_node_types"].values():  # the AWS bootstrap's interface checks
        node = _configure_subnets_and_groups_from_network_interfaces(node_type["node_config"])
        assert len(set(node["SubnetIds"])) == 1  # EFA does not cross subnets


def test_every_node_runs_a_pinned_python311_image_with_the_projects_pins():
    config = _cluster()
    image = config["docker"]["image"]
    ray_version = version("ray")
    assert re.search(rf":ray{re.escape(ray_version)}-py311-cu\d+$", image), image  # a pinned tag, not latest
    base = re.search(r"^FROM (\S+)$", DOCKERFILE.read_text(), re.M).group(1)
    assert base == f"rayproject/ray:{ray_version}-py311-cu128"
    assert image.endswith(f":ray{base.split(':')[1]}")  # the image is built from that base
    docker = DOCKERFILE.read_text()
    assert 'pip install --no-cache-dir -c constraints.txt -e ".[gpu]"' in docker
    assert "sys.version_info[:2] == (3, 11)" in docker
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    from packaging.specifiers import SpecifierSet
    assert f"ray[data,serve,train]=={ray_version}" in pins["dependencies"]
    assert "3.11" in SpecifierSet(pins["requires-python"]) and "3.10" not in SpecifierSet(pins["requires-python"])
    # nothing builds its own environment from the AMI's python3 (3.10 on Ubuntu 22.04)
    assert not any("venv" in c or "python3 " in c for c in config["setup_commands"])


def test_p5_nodes_get_their_32_efa_interfaces_and_nccl_sees_them():
    config = _cluster()
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        assert node["InstanceType"] == "p5.48xlarge"
        interfaces = node["NetworkInterfaces"]
        assert sorted(i["NetworkCardIndex"] for i in interfaces) == list(range(32)), name
        assert all(i["InterfaceType"] == "efa" for i in interfaces)
        assert [i["DeviceIndex"] for i in interfaces if i["NetworkCardIndex"] == 0] == [0]  # the primary
        assert "GroupName" in node["Placement"]
    options = " ".join(config["docker"]["run_options"])
    assert "--device=/dev/infiniband" in options and "FI_PROVIDER=efa" in options
    assert "memlock=-1" in options


def test_the_training_workers_fit_on_the_nodes_that_offer_their_resources():
    sft = _s1_32b().sft
    config = _cluster()
    assert sft.launcher == "ray" and sft.use_gpu and sft.ray_resources_per_worker
    capacity = {}
    for node_type in config["available_node_types"].values():
        count = max(node_type.get("min_workers", 0), 1 if node_type is config["available_node_types"]
                    [config["head_node_type"]] else 0)
        for key, value in node_type["resources"].items():
            capacity[key] = capacity.get(key, 0) + value * count
    needs = {"GPU": 1, **sft.ray_resources_per_worker}
    for key, per_worker in needs.items():  # every custom resource the workers ask for exists, for all of them
        assert capacity.get(key, 0) >= per_worker * sft.world_size, (key, capacity)
    assert sft.ray_storage and sft.ray_storage.startswith("s3://")  # reached from every node


def test_every_node_type_that_runs_training_ranks_gets_the_s3_instance_profile():
    """Ray's AWS launcher gives its default instance profile to the head only (config['head_node']); worker nodes
    launch with what their node_config names. Every node type that takes SFT ranks (they upload checkpoints to
    sft.checkpoint_uri) or distillation workers (shards in teacher.shard_uri) must name the same profile."""
    from ray.autoscaler._private.aws.config import _configure_iam_role
    from ray.autoscaler._private.util import prepare_config
    profile = _s1_32b()
    config = prepare_config(_cluster())
    types, head = config["available_node_types"], config["head_node_type"]
    needs = {"GPU": 1, **profile.sft.ray_resources_per_worker}
    trainers = [name for name, t in types.items() if all(t["resources"].get(k, 0) >= v for k, v in needs.items())]
    assert head in trainers and len(trainers) == len(types) == 2
    profiles = {name: types[name]["node_config"].get("IamInstanceProfile") for name in types}
    assert all(profiles.values()), profiles  # no node type left without S3 access
    assert len({json.dumps(p, sort_keys=True) for p in profiles.values()}) == 1, profiles  # one role for all ranks
    assert set(profiles[head]) <= {"Arn", "Name"}
    config["head_node"] = {}
    config = _configure_iam_role(config)  # with the head's profile named, Ray creates none and adds none to the head
    assert config["head_node"] == {} and types[head]["node_config"]["IamInstanceProfile"] == profiles[head]
    for uri in (profile.sft.checkpoint_uri, profile.sft.ray_storage, profile.teacher.shard_uri):
        assert uri and uri.startswith("s3://"), uri


def _docker_runs() -> list[str]:
    """The Dockerfile's RUN instructions, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line[4:] for line in text.splitlines() if line.startswith("RUN ")]


def test_flash_attn_builds_against_the_installed_torch():
    """flash-attn's sdist imports torch in setup.py: pip's isolated build environment has none. It must be built
    with --no-build-isolation, after a step that installs torch and its build tools."""
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    flash = next(p for p in pins["optional-dependencies"]["gpu"] if p.startswith("flash-attn"))
    runs = _docker_runs()
    builds = [i for i, r in enumerate(runs) if flash in r]
    assert builds and all("--no-build-isolation" in runs[i] for i in builds), runs
    first = builds[0]
    torch_step = next(i for i, r in enumerate(runs) if re.search(r'pip install .*-c constraints\.txt -e \.(\s|$)', r))
    assert torch_step < first  # the project (torch==2.13.0) is installed before flash-attn is built
    before = " ".join(runs[:first + 1])
    assert all(tool in before for tool in ("wheel==", "packaging", "ninja", "setuptools")), before
    gpu_extra = next(i for i, r in enumerate(runs) if '-e ".[gpu]"' in r)
    assert gpu_extra > first  # the extra finds flash-attn installed instead of building it in isolation
    assert "FLASH_ATTN_CUDA_ARCHS=90" in DOCKERFILE.read_text()  # H100 (sm_90) only


def test_the_efa_installer_is_a_pinned_release_checked_against_its_sha256():
    text = DOCKERFILE.read_text()
    assert "latest" not in re.sub(r"#.*", "", text)  # no moving target anywhere
    args = dict(re.findall(r"^ARG (\w+)=(\S*)$", text, re.M))
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["EFA_INSTALLER_VERSION"]), args
    assert re.fullmatch(r"[0-9a-f]{64}", args["EFA_INSTALLER_SHA256"]), args
    efa = next(r for r in _docker_runs() if "efa_installer.sh" in r)
    download = efa.index("aws-efa-installer-${EFA_INSTALLER_VERSION}.tar.gz")
    check = efa.index('echo "${EFA_INSTALLER_SHA256}  /tmp/efa.tar.gz" | sha256sum -c -')
    assert download < check < efa.index("tar -xzf") < efa.index("./efa_installer.sh")  # checked before it runs
    assert efa.index('test -n "$EFA_INSTALLER_SHA256"') < download  # an emptied build arg stops the build


def _fake_tool(bin_dir, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def test_every_node_gets_its_keys_from_ssm_into_an_env_file_docker_reads_and_ray_never_carries(tmp_path):
    import os
    import subprocess
    config = _cluster()
    env_file = "/home/ubuntu/s1flow.env"
    assert f"--env-file {env_file}" in config["docker"]["run_options"]
    (command,) = config["initialization_commands"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_tool(bin_dir, "curl", 'for a in "$@"; do [ "$a" = "-X" ] && { echo token; exit 0; }; done; echo eu-west-1\n')
    _fake_tool(bin_dir, "aws", 'name=$(echo "$@" | sed -E "s|.*--name /s1flow/([A-Z0-9_]+).*|\\1|")\n'
                               '[ "$name" = "HF_TOKEN" ] && [ -n "$FAIL" ] && exit 254\n'
                               'echo "secret-$name-$(echo "$@" | grep -o "region [a-z0-9-]*" | cut -d" " -f2)"\n')
    out = tmp_path / "s1flow.env"
    script = command.replace(env_file, str(out))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", script], env=env, check=True)
    assert out.read_text().splitlines() == [f"{k}=secret-{k}-eu-west-1" for k in
                                            ("S1FLOW_API_KEY", "GEMINI_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN")]
    assert oct(out.stat().st_mode & 0o777) == "0o600"  # only its owner reads the keys
    failed = subprocess.run(["bash", "-c", script], env={**env, "FAIL": "1"})
    assert failed.returncode == 1  # a key that cannot be read stops the node's start, not a replica hours later
    text = (REPO / "infra" / "ray" / "cluster-h100.yaml").read_text()
    assert "secret-" not in text and "env_vars" not in text
