"""Lifecycle (managed) nodes that also bring themselves up, as yolo_ros does.

The descriptor and re-ranker nodes load their model on activate and free it on deactivate.
With ``autostart`` true (the default) a node configures and activates itself at the end of
its constructor, so ``ros2 run``, the one-process ``vpr_graph`` and code that simply
constructs a node all get a working node; a lifecycle manager sets ``autostart:=false`` and
drives the transitions itself (``ros2 lifecycle set /descriptor_node configure`` ...).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from .params import declare_node_parameters

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


class StartupError(RuntimeError):
    """A node could not configure or activate itself (the message says why)."""


class ManagedNode(LifecycleNode):
    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        # Node-only parameters (autostart, topics, diagnostics...) from node_parameters.py.
        declare_node_parameters(self, node_name)
        self.startup_error: str | None = None
        self.active = False
        # Counts of workers from earlier activations, so diagnostics survive a reactivation.
        self._worker_totals: Counter = Counter()

    def autostart(self) -> None:
        """Call at the end of a subclass constructor."""
        if self.get_parameter("autostart").value:
            self.bring_up()

    def bring_up(self) -> None:
        """configure + activate; raises StartupError (and destroys the node) on failure."""
        for name, trigger in (("configure", self.trigger_configure), ("activate", self.trigger_activate)):
            result = trigger()
            if result != SUCCESS:
                reason = self.startup_error or f"transition returned {result.to_label()}"
                message = f"{self.get_name()} could not {name}: {reason}"
                self.destroy_node()
                raise StartupError(message)

    def on_configure(self, state):
        return self.run_transition("configure", self._configure)

    def on_deactivate(self, state):
        super().on_deactivate(state)  # disables the lifecycle publishers
        return self.run_transition("deactivate", self._deactivate)

    def on_cleanup(self, state):
        return SUCCESS

    def on_shutdown(self, state):
        if self.active:
            return self.run_transition("shutdown", self._deactivate)
        return SUCCESS

    def _configure(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def _stop_worker(self) -> None:
        """Stop the node's bounded worker (``self.worker``), keeping its counts."""
        if self.worker is not None:
            self.worker.stop(timeout=1.0)
            for key in ("dropped", "processed", "errors"):
                self._worker_totals[key] += getattr(self.worker, key)
            self.worker = None

    def worker_count(self, key: str) -> int:
        """dropped / processed / errors over every activation so far."""
        worker = self.worker
        return self._worker_totals[key] + (getattr(worker, key) if worker is not None else 0)

    def run_transition(self, name: str, body: Callable[[], None]) -> TransitionCallbackReturn:
        """Run a transition body; an exception becomes FAILURE with its reason logged and kept."""
        try:
            body()
        except Exception as exc:
            self.startup_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"{name} failed: {self.startup_error}")
            return FAILURE
        return SUCCESS


def free_accelerator_memory() -> None:
    """After dropping a model: return cached GPU memory to the driver (no-op on CPU)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
