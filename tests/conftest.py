"""Shared test settings: Hypothesis profiles, :func:`need` for simulators, and the VM and
model tests run once per VM executor.

Hypothesis profiles:

- ``ci`` (selected when ``CI`` is true, see :func:`sim.cosim.toolchain.in_ci`, or under
  ``make test``): derandomised, so a run is reproducible from the commit alone, with no
  deadline (shared CI machines have unsteady timing) and no example database.
- ``dev`` (otherwise): random examples, no deadline, the local example database, so that a
  failure found once is replayed first next time.

``HYPOTHESIS_PROFILE=ci|dev`` overrides the choice. Tests that set ``max_examples`` keep it
under both profiles.

A test that needs a simulator calls ``need("icarus")`` or ``need("verilator")`` first
(``from conftest import need``). Co-simulation tests run each configuration on the one
simulator :func:`simulators_for` assigns it (the builds and runs of both would double the
tier's time, and an Icarus launch costs seconds to tens of seconds where Verilator's costs
one or two); ``TIDAL_COSIM_BOTH=1`` (``make cosim-both``) runs every configuration on both.

Every test of the modules in :data:`BOTH_EXECUTORS` is parametrised over the untraced
executors of ``sim.vm`` (``compiled`` and ``numpy``) through the ``TIDAL_VM_EXECUTOR``
environment variable, which every ``VM`` built without an explicit ``executor`` (including
``Program.to_vm()`` and subprocesses) follows. Tracing VMs always use the cycle model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from isa.config import Config, Depths
from sim.cosim import toolchain
from sim.vm import EXECUTOR_ENV

#: Set by ``scripts/test.sh`` (``make test``): every tier must really run.
STRICT_ENV = "TIDAL_NEED_SIMULATORS"
#: Set to 1 to co-simulate every configuration on both simulators (``make cosim-both``).
BOTH_ENV = "TIDAL_COSIM_BOTH"

settings.register_profile("ci", derandomize=True, deadline=None, database=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None)


def strict() -> bool:
    """Return True in CI or under ``make test``, where nothing may be skipped."""
    return toolchain.in_ci() or os.environ.get(STRICT_ENV, "") == "1"


settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if strict() else "dev"))


def need(simulator: str) -> None:
    """Stop the calling test unless ``simulator`` can run co-simulations.

    A missing simulator fails the test in CI and under ``make test`` (:func:`strict`), and
    only skips it when a developer runs pytest by hand; the message says how to install it.

    Parameters
    ----------
    simulator : str
        ``"icarus"`` or ``"verilator"``.
    """
    why = toolchain.simulator_status(simulator)
    if why is None:
        return
    if strict():
        pytest.fail(f"{simulator} is required in CI and under make test: {why}", pytrace=False)
    pytest.skip(why)


def simulators_for(config: Config | str) -> list[str]:
    """Return the simulators that co-simulate ``config`` (a Config or a preset name).

    One-core machines at depths other than the realistic ones run on Icarus, every other
    machine on Verilator; with ``TIDAL_COSIM_BOTH=1``, both. (Tests that name Icarus run
    it on the one-core and two-core machines at the realistic depths.)
    """
    if os.environ.get(BOTH_ENV, "") == "1":
        return list(toolchain.SIMULATORS)
    cfg = Config.preset(config) if isinstance(config, str) else config
    icarus = cfg.num_cores == 1 and cfg.depths != Depths.realistic()
    return ["icarus" if icarus else "verilator"]


def cosim_params(configs: list[str]) -> list[tuple[str, str]]:
    """Return the ``(config, simulator)`` pairs of :func:`simulators_for` for presets."""
    return [(c, s) for c in configs for s in simulators_for(c)]


#: Test modules run through both executors.
BOTH_EXECUTORS = {"test_vm", "test_compiler", "test_seed"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the tests of :data:`BOTH_EXECUTORS` over the executors."""
    if metafunc.module.__name__.rpartition(".")[2] in BOTH_EXECUTORS:
        metafunc.parametrize("vm_executor", ["compiled", "numpy"], indirect=True)


@pytest.fixture(autouse=True)
def vm_executor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[str | None]:
    """Set ``TIDAL_VM_EXECUTOR`` to this test's executor (unset: the default)."""
    executor = getattr(request, "param", None)
    if executor is not None:
        monkeypatch.setenv(EXECUTOR_ENV, executor)
    yield executor
