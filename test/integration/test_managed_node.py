"""The managed (lifecycle) depth node as a separate process over real DDS (loopback), driven through its lifecycle
services (``<node>/change_state``, ``<node>/get_state``) as a lifecycle manager or ``ros2 lifecycle set`` would.

The camera client and the process helpers are test_depth_node's; each test starts its own node process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_depth_node import H_M, K_MODEL, REPO, W_M, Client, stop_node
from tiny_depth_model import make_tiny_depth_model

pytestmark = [pytest.mark.ros, pytest.mark.rosdistro]  # rosdistro: `make test-jazzy` runs it on Jazzy too

OUTPUTS = ("depth", "info", "points")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_depth_model(tmp_path_factory.mktemp("model") / "tiny.onnx", height=H_M, width=W_M,
                                 K_model=K_MODEL)


def start_managed(env, log_path: Path, namespace: str, *params: str):
    cmd = [sys.executable, "-m", "monodepth_ros.managed_node", "--ros-args", "-r", f"__ns:={namespace}",
           *sum((["-p", p] for p in params), [])]
    log = open(log_path, "w")  # noqa: SIM115 - closed by stop_node
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    proc.log_file, proc.log_path = log, Path(log_path)
    return proc


class Lifecycle:
    """Lifecycle service clients of the node ``<namespace>/depth_node``, on the test client's rclpy node."""

    def __init__(self, c: Client, namespace: str, proc):
        from lifecycle_msgs.srv import ChangeState, GetState

        self.c, self.proc = c, proc
        self._change = c.node.create_client(ChangeState, f"{namespace}/depth_node/change_state")
        self._get = c.node.create_client(GetState, f"{namespace}/depth_node/get_state")
        ready = c.spin_until(lambda: self._change.service_is_ready() and self._get.service_is_ready()
                             and c.param_client.service_is_ready(), 30.0, proc)
        assert ready, f"lifecycle services not found:\n{proc.log_path.read_text()[-3000:]}"

    def _call(self, client, request):
        fut = client.call_async(request)
        assert self.c.spin_until(fut.done, 20.0, self.proc), f"{client.srv_name} timed out"
        return fut.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self._get, GetState.Request()).current_state.label

    def change(self, label: str) -> bool:
        """Trigger the transition ``label`` (configure, activate, deactivate, cleanup, shutdown: labels as
        ``ros2 lifecycle set`` takes them); its success."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        return self._call(self._change, ChangeState.Request(transition=Transition(label=label))).success


def diag_state(c: Client) -> str | None:
    return c.latest_diag_values().get("lifecycle_state")


def frames_get_no_output(c: Client, proc, duration_s: float = 1.0) -> None:
    """Camera frames for ``duration_s``: none of them may come back on any output."""
    sent = []
    for i in range(int(duration_s / 0.1)):
        ns, _ = c.send_good(40 + i)
        sent.append(ns)
        c.spin_until(lambda: False, 0.1, proc)
    for key in (*OUTPUTS, "colored", "confidence"):
        assert not set(sent) & set(c.got[key]), f"{key} published while not active"


def test_lifecycle_gates_output_configure_activate_deactivate_cleanup_shutdown(tiny_model, ros_subprocess_env,
                                                                              tmp_path):
    ns = "/lc"
    proc = start_managed(ros_subprocess_env, tmp_path / "node.log", ns, f"model_path:={tiny_model}",
                         "qos:=reliable", "diagnostics_period_s:=0.2")
    c = None
    try:
        c = Client(ns)
        lc = Lifecycle(c, ns, proc)
        assert lc.state() == "unconfigured"
        assert c.spin_until(lambda: diag_state(c) == "unconfigured", 5.0, proc), c.latest_diag_values()
        assert "depth backend" not in proc.log_path.read_text()  # nothing loaded before configure

        assert lc.change("configure") and lc.state() == "inactive"
        # Inactive: the outputs exist (lifecycle publishers), nothing subscribes to the camera, nothing comes out.
        assert c.spin_until(lambda: c.node.count_publishers(f"{ns}/depth") == 1, 10.0, proc)
        assert c.node.count_subscribers(f"{ns}/image") == 0
        assert c.spin_until(lambda: diag_state(c) == "inactive", 5.0, proc), c.latest_diag_values()
        assert c.latest_diag_values()["_message"] == "inactive: not processing"
        frames_get_no_output(c, proc, 0.6)

        assert lc.change("activate") and lc.state() == "active"
        assert c.spin_until(lambda: c.pub_image.get_subscription_count() > 0
                            and c.pub_info.get_subscription_count() > 0, 10.0, proc)
        c.warm_up(proc)  # depth, depth/camera_info and points for a frame
        for i in range(3):
            stamp_ns, _ = c.send_good(20 + i)
            c.wait_outputs(stamp_ns, proc)
        assert c.spin_until(lambda: diag_state(c) == "active" and c.latest_diag_values()["frames_out"] != "0",
                            5.0, proc), c.latest_diag_values()

        assert lc.change("deactivate") and lc.state() == "inactive"
        frames_get_no_output(c, proc, 1.0)
        assert c.spin_until(lambda: c.pub_image.get_subscription_count() == 0, 5.0, proc)

        assert lc.change("cleanup") and lc.state() == "unconfigured"
        assert c.spin_until(lambda: c.node.count_publishers(f"{ns}/depth") == 0, 10.0, proc)
        assert lc.change("shutdown") and lc.state() == "finalized"
        assert proc.poll() is None  # finalized, as rclcpp lifecycle nodes: stays up until stopped
        log = proc.log_path.read_text()
        for line in ("configured (inactive)", "active: subscribing /lc/image + /lc/camera_info",
                     "inactive: unsubscribed", "cleaned up (unconfigured)", "shut down from unconfigured"):
            assert line in log, log[-3000:]
    finally:
        if c is not None:
            c.close()
        stop_node(proc)
    assert proc.returncode == 0, proc.log_path.read_text()[-3000:]
    assert "Traceback" not in proc.log_path.read_text()


def test_failed_configure_keeps_node_unconfigured_until_parameters_are_fixed(tiny_model, ros_subprocess_env,
                                                                              tmp_path):
    """A bad parameter, then a missing model: configure fails with the reason each time (log, /diagnostics) and
    the node stays unconfigured; the restart parameters change while unconfigured, and configure then succeeds.
    Shutdown from active releases everything."""
    from diagnostic_msgs.msg import DiagnosticStatus

    ns, missing = "/lcf", tmp_path / "missing.onnx"
    proc = start_managed(ros_subprocess_env, tmp_path / "node.log", ns, f"model_path:={missing}",
                         "scale_policy:=magic", "qos:=reliable", "diagnostics_period_s:=0.2")
    c = None
    try:
        c = Client(ns)
        lc = Lifecycle(c, ns, proc)
        assert not lc.change("configure") and lc.state() == "unconfigured"
        assert "configure failed, staying unconfigured: invalid parameters: scale_policy" in proc.log_path.read_text()
        assert all(r.successful for r in c.set_params(scale_policy="auto"))

        assert not lc.change("configure") and lc.state() == "unconfigured"
        log = proc.log_path.read_text()
        assert f"cannot load model '{missing}'" in log and "Traceback" not in log, log[-3000:]
        assert c.spin_until(lambda: "cannot load model" in c.latest_diag_values().get("configure_error", ""),
                            5.0, proc), c.latest_diag_values()
        assert c.latest_diag_values()["_level"] == DiagnosticStatus.ERROR

        assert all(r.successful for r in c.set_params(model_path=str(tiny_model)))  # allowed while unconfigured
        assert lc.change("configure") and lc.state() == "inactive"
        assert c.spin_until(lambda: diag_state(c) == "inactive", 5.0, proc), c.latest_diag_values()
        assert "configure_error" not in c.latest_diag_values()
        (r,) = c.set_params(model_path=str(missing))  # not while configured
        assert not r.successful and "only while the node is unconfigured" in r.reason

        assert lc.change("activate")
        assert c.spin_until(lambda: c.pub_image.get_subscription_count() > 0, 10.0, proc)
        c.warm_up(proc)
        assert lc.change("shutdown") and lc.state() == "finalized"
        assert "shut down from active" in proc.log_path.read_text()
        frames_get_no_output(c, proc, 0.5)
    finally:
        if c is not None:
            c.close()
        stop_node(proc)
    assert proc.returncode == 0, proc.log_path.read_text()[-3000:]
