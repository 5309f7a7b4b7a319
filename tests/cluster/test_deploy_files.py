"""deploy/ray-serve.yaml and deploy/kuberay.yaml: valid for Ray Serve, accepted by our app builder, in step."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from slmserve.cluster.app import ClusterOptions, app_builder

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def serve_config() -> dict:
    return yaml.safe_load((DEPLOY / "ray-serve.yaml").read_text())


def test_the_serve_config_is_valid_for_ray_and_builds_our_app():
    config = serve_config()
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "slmserve.cluster.app:app_builder" and app.route_prefix == "/"
    built = app_builder(app.args)
    assert type(built).__name__ == "Application"


def test_the_kuberay_service_serves_the_same_application():
    service = yaml.safe_load((DEPLOY / "kuberay.yaml").read_text())
    assert service["kind"] == "RayService" and service["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.0"
    inner = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert inner["applications"] == serve_config()["applications"]


def test_cluster_options_refuse_nonsense():
    with pytest.raises(ValueError):
        ClusterOptions(replicas=0)
    with pytest.raises(ValueError):
        ClusterOptions(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError):
        ClusterOptions(stream_interval_ms=-1)
    assert ClusterOptions(max_replicas=4).scaling()["autoscaling_config"]["max_replicas"] == 4
    assert ClusterOptions(replicas=3).scaling() == {"num_replicas": 3}
