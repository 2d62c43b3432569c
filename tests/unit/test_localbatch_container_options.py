"""Container tasks without an engine: the run-options policy, Batch's mounts and variables, the ``create``
command, the engine's argv builders and quirk candidates, the image helpers' mirror lookup.

What a container task does on a real engine is tests/integration/test_localbatch_containers.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchwire import containers
from devstack import images
from localbatch import container_tasks as ct

ROOT = Path("/work/nodes/tvm-1")
TASK = ROOT / "workitems" / "s:job-1" / "job-1" / "jm"


def env() -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "AZ_BATCH_NODE_ROOT_DIR": str(ROOT),
        "AZ_BATCH_NODE_SHARED_DIR": str(ROOT / "shared"),
        "AZ_BATCH_NODE_STARTUP_DIR": str(ROOT / "startup"),
        "AZ_BATCH_NODE_STARTUP_WORKING_DIR": str(ROOT / "startup" / "wd"),
        "AZ_BATCH_NODE_MOUNTS_DIR": str(ROOT / "fsmounts"),
        "AZ_BATCH_TASK_DIR": str(TASK),
        "AZ_BATCH_TASK_WORKING_DIR": str(TASK / "wd"),
        "AZ_BATCH_JOB_PREP_DIR": str(TASK.parent / "jobpreparation"),
        "AZ_BATCH_JOB_PREP_WORKING_DIR": str(TASK.parent / "jobpreparation" / "wd"),
        "AZ_BATCH_TASK_ID": "jm",
        "GREETING": "hi",
        "DOCKER_CONFIG": "/secret/place",
    }


def parse(options: str) -> ct.RunOptions:
    return ct.parse_run_options(options, env(), node_root=ROOT, mounted=[str(ROOT)])


def test_container_options_inside_the_sandbox_pass_and_rm_is_dropped() -> None:
    parsed = parse("--rm -e A=1 --env=B=2 -w /tmp --user 1000:1000 --memory 64m --cpus=1.5 --network none "
                   "--read-only --pids-limit 50 --entrypoint /bin/sh -v $AZ_BATCH_NODE_SHARED_DIR:/data:ro "
                   "--mount type=tmpfs,target=/scratch --pid private")
    assert "--rm" not in parsed.args and parsed.network
    assert parsed.args[:4] == ["-e", "A=1", "--env", "B=2"]
    assert ["-v", f"{ROOT}/shared:/data:ro"] == parsed.args[parsed.args.index("-v"):parsed.args.index("-v") + 2]
    assert ["--pid", "private"] == parsed.args[-2:]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ("--privileged", "--privileged is not allowed"),
        ("--cap-add=NET_ADMIN", "--cap-add is not allowed"),
        ("--device /dev/fuse", "--device is not allowed"),
        ("--security-opt seccomp=unconfined", "--security-opt is not allowed"),
        ("--pid=host", "--pid=host is not allowed"),
        ("--ipc host", "--ipc=host is not allowed"),
        ("--userns=host", "--userns=host is not allowed"),
        ("--network container:db", "--network container:db is not allowed"),
        ("--net=ns:/proc/1/ns/net", "--net ns:/proc/1/ns/net is not allowed"),
        ("-v /etc:/etc2", "-v /etc is not allowed"),
        ("-v /work/nodes/tvm-1/../tvm-2:/x", "is not allowed"),
        ("--volume named:/data", "named volumes are not"),
        ("--mount type=bind,source=/var/run/docker.sock,target=/s", "--mount /var/run/docker.sock is not allowed"),
        ("--mount type=volume,target=/v", "only type=bind"),
        ("--env-file /etc/environment", "--env-file /etc/environment is not allowed"),
        ("--volumes-from other", "--volumes-from is not allowed"),
        ("--name mine", "Batch names the container"),
        ("--gpus all", "--gpus is not allowed"),
        ("--label azurebatch.dev/localbatch=x", "labels azurebatch.dev/* are Batch's own"),
        ("--sysctl net.ipv4.ip_forward=1", "--sysctl is not allowed"),
        ("--tmpfs", "--tmpfs needs a value"),
        ("--oom-score-adj 5", "--oom-score-adj is not among the run options"),
        ("busybox", "is not an option"),
        ("-v $AZ_BATCH_NODE_ROOT_DIR:$AZ_BATCH_NODE_ROOT_DIR", f"Duplicate mount point: {ROOT}"),
        ("-e 'unterminated", "cannot be split"),
    ],
)
def test_container_options_that_leave_the_sandbox_are_refused_by_name(options: str, named: str) -> None:
    with pytest.raises(ct.OptionRefused) as refused:
        parse(options)
    assert named in str(refused.value)


def test_container_option_variables_expand_from_the_task_environment_only() -> None:
    assert ct.expand("$GREETING ${AZ_BATCH_TASK_ID} $UNKNOWN", env()) == "hi jm $UNKNOWN"


def test_container_mounts_default_whole_root_empty_none_and_selection_drops_variables(tmp_path: Path) -> None:
    root = tmp_path / "node"
    variables = {k: v.replace(str(ROOT), str(root)) for k, v in env().items()}
    kept = dict(variables)
    assert ct.batch_mounts({}, kept, root) == [(str(root), str(root), False)] and kept == variables
    none = dict(variables)
    assert ct.batch_mounts({"containerHostBatchBindMounts": []}, none, root) == []
    assert not any(k in none for k in ("AZ_BATCH_TASK_DIR", "AZ_BATCH_NODE_SHARED_DIR", "AZ_BATCH_JOB_PREP_DIR"))
    assert none["AZ_BATCH_NODE_ROOT_DIR"] == str(root) and none["GREETING"] == "hi"
    chosen = dict(variables)
    mounts = ct.batch_mounts({"containerHostBatchBindMounts": [{"source": "Task"},
                                                                {"source": "Shared", "isReadOnly": True}]},
                             chosen, root)
    task = variables["AZ_BATCH_TASK_DIR"]
    assert (task, task, False) in mounts and (f"{root}/shared", f"{root}/shared", True) in mounts
    assert Path(task).is_dir(), "mounted directories exist before the engine binds them"
    assert "AZ_BATCH_NODE_STARTUP_DIR" not in chosen and chosen["AZ_BATCH_TASK_WORKING_DIR"].endswith("/wd")


def plan(settings: dict[str, object], engine: containers.Engine | None = None) -> ct.ContainerRun:
    return ct.plan(engine or containers.Engine(name="podman", path="/usr/bin/podman", available=True,
                                               run_options=("--ulimit", "nofile=1024:1024")),
                   {"imageName": "localhost/img:1", **settings}, env=env(), user_env=["GREETING"], node_root=ROOT,
                   working_dir=TASK / "wd", name="lb-abc-jm", labels={containers.LABEL: "abc"},
                   command=["/bin/sh", "-c", "echo $GREETING"])


def test_container_create_command_mounts_root_passes_variables_by_name_and_works_in_task_dir() -> None:
    run = plan({"containerRunOptions": "--rm --memory 64m"})
    argv = run.create
    assert argv[:2] == ["/usr/bin/podman", "create"]
    assert argv[-4:] == ["localhost/img:1", "/bin/sh", "-c", "echo $GREETING"]
    assert f"type=bind,source={ROOT},target={ROOT}" in argv
    assert ["--ulimit", "nofile=1024:1024"] == argv[argv.index("--ulimit"):argv.index("--ulimit") + 2]
    assert ["-w", str(TASK / "wd")] == argv[argv.index("-w"):argv.index("-w") + 2]
    assert ["--network", "host"] == argv[argv.index("--network"):argv.index("--network") + 2]
    assert ["--label", f"{containers.LABEL}=abc"] == argv[argv.index("--label"):argv.index("--label") + 2]
    assert argv.index("--memory") > argv.index("-w"), "the user's options come after Batch's (and win)"
    for name in ("AZ_BATCH_TASK_ID", "GREETING", "AZ_BATCH_NODE_ROOT_DIR"):
        assert name in argv and run.env[name] == env()[name]
    assert "PATH" not in argv and not any("=hi" in a for a in argv), "values travel in the CLI's environment"
    assert "DOCKER_CONFIG" not in argv, "only Batch's and the user's variables go in"


def test_container_create_command_image_default_workdir_and_user_network() -> None:
    argv = plan({"workingDirectory": "containerImageDefault", "containerRunOptions": "--network none"}).create
    assert "-w" not in argv and argv.count("--network") == 1 and "none" in argv


def test_container_working_dir_not_mounted_is_refused() -> None:
    with pytest.raises(ct.OptionRefused, match="containerImageDefault"):
        plan({"containerHostBatchBindMounts": [{"source": "Shared"}]})


def test_container_engine_argv_builders() -> None:
    podman = containers.Engine(name="podman", path="podman", global_options=("--runtime", "runc"))
    docker = containers.Engine(name="docker", path="docker")
    assert podman.rm("a", "b") == ["podman", "--runtime", "runc", "rm", "--force", "--time", "0", "a", "b"]
    assert docker.rm("a") == ["docker", "rm", "--force", "a"]
    assert podman.image_exists("x") == ["podman", "--runtime", "runc", "image", "exists", "x"]
    assert docker.image_exists("x")[1:3] == ["image", "inspect"]
    assert podman.ps("sid")[-4:] == ["--filter", f"label={containers.LABEL}=sid", "--format", "{{.Names}}"]
    assert docker.import_("img", changes=["CMD [\"/bin/sh\"]"]) == ["docker", "import", "--change",
                                                                   "CMD [\"/bin/sh\"]", "-", "img"]
    assert "unavailable" not in docker.describe() and "no container engine" in docker.describe()


def test_container_names_are_unique_per_service_and_valid() -> None:
    a = ct.container_name("aaaaaaaaaaaa", "sched:job-1", "jm")
    b = ct.container_name("bbbbbbbbbbbb", "sched:job-1", "jm")
    assert a != b and a.startswith("lb-aaaaaa-sched-job-1-jm-")
    assert all(c.isalnum() or c in "_.-" for c in a)
    assert ct.service_id(Path("/x/y")) == ct.service_id(Path("/x/../x/y")) != ct.service_id(Path("/x/z"))


def test_container_failures_have_azures_codes_and_details() -> None:
    image = ct.invalid_image("img", "no such image")
    assert (image["code"], image["message"], image["category"]) == (
        "ContainerInvalidImage", "One or more container images specified are invalid", "usererror")
    assert image["details"] == [{"name": "ContainerImage", "value": "img"},
                                {"name": "Message", "value": "no such image"}]
    node = ct.node_error(image)
    assert node["errorDetails"] == image["details"] and "details" not in node
    assert ct.not_started("img", 'exec: "/x": stat /x: no such file or directory')["code"] == "CommandProgramNotFound"
    assert ct.not_started("img", "cgroup trouble")["code"] == "ContainerMiscError"


def test_container_quirk_candidates_put_the_likeliest_first() -> None:
    rootless = containers._candidates(rootless=True, runtime="crun")
    assert all(isinstance(q, containers.Quirks) for q in rootless)
    if containers.cgroup_v2_only():
        assert not rootless[0].runc
    assert len({(q.runc, q.limits) for q in rootless}) == len(rootless), "each combination once"
    assert any(not q.limits for q in rootless) and any(q.limits for q in rootless)
    on_runc = containers._candidates(rootless=False, runtime="runc")
    assert not any(q.runc for q in on_runc), "runc is already the runtime"


def test_container_base_image_uses_the_mirror_apt_uses(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\n"
                      "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n")
    legacy = tmp_path / "sources.list"
    legacy.write_text("deb [arch=amd64] http://old.example/debian bookworm main\n")
    assert images.apt_mirror([deb822, legacy]) == "http://mirror.example/debian"
    assert images.apt_mirror([tmp_path / "absent", legacy]) == "http://old.example/debian"
    assert images.apt_mirror([tmp_path / "absent"]) == images.DEFAULT_MIRROR
