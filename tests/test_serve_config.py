"""``deploy/serve.yaml``, the Ray Serve config for ``serve deploy`` (issue 20), without a cluster.

- it validates as Ray's ``ServeDeploySchema``, and every key in it is a field Ray knows (the
  schema itself ignores unknown keys, so a misspelt option would be dropped silently);
- its applications and deployments are the names the gateways look up;
- every ``import_path`` imports, its builder takes the file's ``args`` and returns a
  ``ray.serve.Application``, and the options a replica ends up with (the builder's, overridden by
  the file, as Ray's controller merges them) are what the file and ``[ray]`` say;
- bad builder args raise SerError naming the key;
- ``ser-serve --gateways 2 --engine ray`` without ``--redis`` exits 2 before it imports Ray.

Nothing here starts Ray (checked at the end of each build).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
yaml = pytest.importorskip("yaml")
pytest.importorskip("fastapi")

from ray import serve  # noqa: E402
from ray.serve.config import AutoscalingConfig  # noqa: E402
from ray.serve.schema import (DeploymentSchema, HTTPOptionsSchema, LoggingConfig, RayActorOptionsSchema,  # noqa: E402
                              ServeApplicationSchema, ServeDeploySchema)

from streamer.runtime.config import Config  # noqa: E402
from streamer.core.errors import SerError  # noqa: E402
from streamer.serve.cluster.gateway import DEPLOYMENT, GatewayOptions, gateway_app  # noqa: E402
from streamer.serve.cluster.models import DeployOptions, ModelDeploymentOptions, audio_app, text_app  # noqa: E402
from streamer.serve.cluster.models import model_apps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
YAML = ROOT / "deploy" / "serve.yaml"
CFG = Config.load()


def raw() -> dict:
    return yaml.safe_load(YAML.read_text(encoding="utf-8"))


def unknown_keys(doc: dict) -> list[str]:
    """Keys of the config that are no field of Ray's schema at their place (dotted paths)."""
    bad: list[str] = []

    def check(d: dict, model, where: str) -> None:
        known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
        bad.extend(f"{where}{k}" for k in d if k not in known)

    check(doc, ServeDeploySchema, "")
    check(doc.get("http_options") or {}, HTTPOptionsSchema, "http_options.")
    check(doc.get("logging_config") or {}, LoggingConfig, "logging_config.")
    for app in doc.get("applications", []):
        at = f"applications[{app.get('name')}]."
        check(app, ServeApplicationSchema, at)
        for dep in app.get("deployments", []):
            dat = f"{at}deployments[{dep.get('name')}]."
            check(dep, DeploymentSchema, dat)
            check(dep.get("ray_actor_options") or {}, RayActorOptionsSchema, f"{dat}ray_actor_options.")
            check(dep.get("autoscaling_config") or {}, AutoscalingConfig, f"{dat}autoscaling_config.")
    return bad


@pytest.fixture(scope="module")
def schema() -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(raw())


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve-config") / "token"
    path.write_text("s3cret-token\n", encoding="utf-8")
    return path


def app_of(schema: ServeDeploySchema, name: str) -> ServeApplicationSchema:
    apps = {a.name: a for a in schema.applications}
    assert name in apps, f"deploy/serve.yaml has no application {name!r} (has {sorted(apps)})"
    return apps[name]


def local_args(app: ServeApplicationSchema, token_file: Path) -> dict:
    """The file's args, with the token file (a path on the cluster's nodes) replaced by a real one."""
    args = dict(app.args)
    if "token_file" in args:
        args["token_file"] = str(token_file)
    return args


def final(app: ServeApplicationSchema, args: dict) -> dict:
    """{deployment: DeploymentInfo} as Ray's controller would run them: the builder called with
    ``args`` as ``serve deploy``'s build task calls it, the application built, then the file's
    deployment options laid over the code's (Ray's own ``override_deployment_info``)."""
    try:
        from ray._common.utils import import_attr
        from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
        from ray.serve._private.application_state import override_deployment_info
        from ray.serve._private.build_app import build_app
        from ray.serve._private.deploy_utils import deploy_args_to_deployment_info
    except ImportError as exc:  # Ray's private build helpers moved: the schema tests still run
        pytest.skip(f"Ray {ray.__version__} has no build helpers where Ray 2.60 had them: {exc}")
    built_app = call_user_app_builder_with_args_if_necessary(import_attr(app.import_path), args)
    assert isinstance(built_app, serve.Application), f"{app.import_path} returned {type(built_app)}"
    built = build_app(built_app, name=app.name)
    infos = {}
    for dep in built.deployments:
        ingress = dep.name == built.ingress_deployment_name
        dep._deployment_config.version = "test"
        # what get_deploy_args sends the controller, less the job id (which would start Ray)
        infos[dep.name] = deploy_args_to_deployment_info(
            deployment_name=dep.name, deployment_config_proto_bytes=dep._deployment_config.to_proto_bytes(),
            replica_config_proto_bytes=dep._replica_config.to_proto_bytes(), deployer_job_id="test",
            app_name=app.name, ingress=ingress, route_prefix="/" if ingress else None)
    out = override_deployment_info(infos, app)
    assert not ray.is_initialized(), "building the application started Ray"
    return out


def test_validates_as_ray_serve_deploy_schema(schema: ServeDeploySchema) -> None:
    assert schema.proxy_location.value in ("EveryNode", "HeadOnly")
    assert schema.http_options.host == "0.0.0.0" and schema.http_options.port == 8000
    assert schema.logging_config is not None and schema.logging_config.enable_access_log is False
    assert unknown_keys(raw()) == []


def test_a_misspelt_key_is_caught() -> None:
    """Ray's schema ignores it (forward compatibility), so the test's own check must not."""
    doc = raw()
    dep = next(a for a in doc["applications"] if a["name"] == CFG.ray.app_name)["deployments"][0]
    dep["max_ongoing_request"] = dep.pop("max_ongoing_requests")
    dep["autoscaling_config"]["target_ongoing"] = 3
    ServeDeploySchema.model_validate(doc)  # accepted by Ray: hence unknown_keys
    bad = unknown_keys(doc)
    assert any(b.endswith("CallGateway].max_ongoing_request") for b in bad), bad
    assert any(b.endswith("autoscaling_config.target_ongoing") for b in bad), bad


def test_names_are_the_ones_the_code_looks_up(schema: ServeDeploySchema) -> None:
    """The gateways connect() to these (application, deployment) names; the gateway is [ray] app_name at /."""
    want = {app: name for app, name, _ in model_apps(DeployOptions(whisper=ModelDeploymentOptions())).values()}
    have = {a.name: [d.name for d in a.deployments] for a in schema.applications}
    for app, name in want.items():
        assert have.get(app) == [name], f"{app}: want deployment {name}, the file has {have.get(app)}"
        assert app_of(schema, app).route_prefix is None, f"{app} is reached by handle only"
    gw = app_of(schema, CFG.ray.app_name)
    assert gw.route_prefix == "/" and [d.name for d in gw.deployments] == [DEPLOYMENT]
    assert gw.import_path == "streamer.serve.cluster.gateway:gateway_app"
    if CFG.ray.whisper:  # the gateways then look for WhisperDeployment too
        assert f"{DeployOptions().app_name}-whisper" in have


def test_gateway_builds_with_the_files_options(schema: ServeDeploySchema, token_file: Path) -> None:
    app = app_of(schema, CFG.ray.app_name)
    args = local_args(app, token_file)
    dep = app.deployments[0]
    infos = final(app, args)
    info = infos[DEPLOYMENT]
    c = info.deployment_config
    # the builder's own options follow [server] max_calls (the file's arg) and [ray]
    max_calls = int(args["max_calls"])
    assert dep.max_ongoing_requests == max_calls + 8, "max_ongoing_requests: max_calls + 8 (the builder's rule)"
    assert c.max_ongoing_requests == max_calls + 8
    assert dep.graceful_shutdown_timeout_s == CFG.ray.drain_s == c.graceful_shutdown_timeout_s
    a = c.autoscaling_config
    assert a is not None, "the gateway autoscales"
    want = dep.autoscaling_config
    assert (a.min_replicas, a.initial_replicas, a.max_replicas) == (want["min_replicas"], want["initial_replicas"],
                                                                    want["max_replicas"])
    assert a.min_replicas <= a.initial_replicas <= a.max_replicas and a.max_replicas > a.min_replicas
    assert a.target_ongoing_requests == CFG.ray.target_calls == want["target_ongoing_requests"]
    assert a.target_ongoing_requests <= max_calls < c.max_ongoing_requests, "else autoscaling never happens"
    assert info.replica_config.ray_actor_options["num_cpus"] == dep.ray_actor_options.num_cpus
    assert info.replica_config.ray_actor_options["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"
    (opts,) = info.replica_config.init_args
    assert isinstance(opts, GatewayOptions)
    assert (opts.redis_url, opts.desk, opts.log_dir, opts.max_calls) == (args["redis_url"], args["desk"],
                                                                         args["log_dir"], max_calls)
    assert opts.token == "s3cret-token" and opts.config_path == args.get("config_path")
    assert info.route_prefix == "/"


@pytest.mark.parametrize("app_name", ["ser-models", "ser-models-text", "ser-models-whisper"])
def test_models_build_with_the_files_options(schema: ServeDeploySchema, app_name: str) -> None:
    app = app_of(schema, app_name)
    dep = app.deployments[0]
    info = final(app, dict(app.args))[dep.name]
    c = info.deployment_config
    config_path, size, wait = info.replica_config.init_args
    assert (size, wait) == (app.args["max_batch_size"], app.args["batch_wait_timeout_s"])
    assert (size, wait) == (CFG.ray.max_batch_size, CFG.ray.batch_wait_timeout_s), "the file follows [ray]"
    assert config_path == app.args.get("config_path")
    assert c.num_replicas == dep.num_replicas and c.autoscaling_config is None
    assert c.max_ongoing_requests == dep.max_ongoing_requests >= size, "batches need max_batch_size requests"
    actor = info.replica_config.ray_actor_options
    assert actor["num_cpus"] == dep.ray_actor_options.num_cpus
    assert not actor.get("num_gpus"), "a GPU is asked for only where the file's comment is taken out"
    assert actor["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1", "the replicas load models offline"


def test_the_commented_gpu_line_works() -> None:
    """Uncommenting ``num_gpus: 1`` gives a valid file whose Whisper replicas ask for a GPU."""
    text = YAML.read_text(encoding="utf-8")
    assert text.count("# num_gpus: 1") == 1
    doc = yaml.safe_load(text.replace("# num_gpus: 1", "num_gpus: 1"))
    app = app_of(ServeDeploySchema.model_validate(doc), "ser-models-whisper")
    actor = final(app, dict(app.args))["WhisperDeployment"].replica_config.ray_actor_options
    assert actor["num_gpus"] == 1 and actor["num_cpus"] == 1


@pytest.mark.parametrize("args, key", [
    ({"redis_url": "redis://h:1", "max_call": 16, "token": "t"}, "max_call"),
    ({"redis_url": "http://h:6379", "token": "t"}, "redis_url"),
    ({"redis_url": "redis://h:1", "max_calls": 0, "token": "t"}, "max_calls"),
    ({"redis_url": "redis://h:1", "max_calls": "lots", "token": "t"}, "max_calls 'lots' is not a whole number"),
    ({"redis_url": "redis://h:1"}, "no token .*token_file.*SER_SERVE_TOKEN"),
])
def test_bad_gateway_args_name_the_key(args: dict, key: str, monkeypatch) -> None:
    monkeypatch.delenv("SER_SERVE_TOKEN", raising=False)
    with pytest.raises(SerError, match=key):
        gateway_app(args)


def test_the_gateways_token_comes_from_its_file_or_environment_or_is_waived_out_loud(tmp_path, monkeypatch) -> None:
    from streamer.serve.cluster.gateway import GatewayOptions

    monkeypatch.delenv("SER_SERVE_TOKEN", raising=False)
    (tmp_path / "token").write_text("s3cret\n")
    assert GatewayOptions.from_args({"token_file": str(tmp_path / "token")}).token == "s3cret"
    monkeypatch.setenv("SER_SERVE_TOKEN", "from-env")
    assert GatewayOptions.from_args({}).token == "from-env"
    monkeypatch.delenv("SER_SERVE_TOKEN")
    assert GatewayOptions.from_args({"allow_no_token": True}).token is None


@pytest.mark.parametrize("builder, args, key", [
    (audio_app, {"max_batch": 8}, "max_batch"),
    (text_app, {"max_batch_size": 0}, "max_batch_size"),
    (audio_app, {"batch_wait_timeout_s": -1}, "batch_wait_timeout_s"),
])
def test_bad_model_args_name_the_key(builder, args: dict, key: str) -> None:
    with pytest.raises(SerError, match=key):
        builder(args)


def test_the_good_args_copy_is_untouched(schema: ServeDeploySchema, token_file: Path) -> None:
    """The builders do not change the args dict they are given (Ray reuses the file's)."""
    app = app_of(schema, CFG.ray.app_name)
    args = local_args(app, token_file)
    before = copy.deepcopy(args)
    gateway_app(args)
    assert args == before


def run_serve(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    """The ``ser-serve`` console script, with a ``ray`` package that refuses to import shadowing
    the real one: a check that comes after Ray starts fails here instead of starting a cluster."""
    shim = tmp_path / "no-ray" / "ray"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text('raise ImportError("ray blocked by tests/test_serve_config.py")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim.parent), str(ROOT)]), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("SER_SERVE_TOKEN", None)
    script = Path(sys.executable).with_name("ser-serve")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "streamer.cli.serve"]
    return subprocess.run([*cmd, *flags], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)


def test_gateways_without_redis_exit_2_before_ray(tmp_path: Path) -> None:
    res = run_serve(tmp_path, "--gateways", "2", "--engine", "ray")
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--redis" in errors[0], res.stderr
    assert "ray blocked" not in res.stderr and "Traceback" not in res.stderr
    # the control: with --redis the same command gets past the check and stops at Ray's import
    # (so the shim works, and the first run did fail before touching Ray)
    res = run_serve(tmp_path, "--gateways", "2", "--engine", "ray", "--redis", "redis://127.0.0.1:1/0")
    assert res.returncode == 2, res.stderr
    assert "needs Ray Serve" in res.stderr and "--redis" not in res.stderr.splitlines()[-1], res.stderr


def test_pace_settings_are_read_and_bad_ones_refused():
    from streamer.core.errors import ConfigError
    from streamer.runtime.config import Config

    cfg = Config.from_dict({"server": {"max_speed": 2.0, "burst_s": 5.0}})
    assert (cfg.server.max_speed, cfg.server.burst_s) == (2.0, 5.0)
    assert (Config.load().server.max_speed, Config.load().server.burst_s) == (1.5, 20.0)
    for bad, fragment in (({"max_speed": 0.5}, "max_speed"), ({"burst_s": 0}, "burst_s"), ({"max_speed": "fast"}, "max_speed")):
        with pytest.raises(ConfigError, match=fragment):
            Config.from_dict({"server": bad})
