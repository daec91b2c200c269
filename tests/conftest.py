"""Shared test set-up: the VM and model tests run once per VM executor.

Every test of the modules in :data:`BOTH_EXECUTORS` is parametrised over the untraced
executors of ``sim.vm`` (``compiled`` and ``numpy``) through the ``TIDAL_VM_EXECUTOR``
environment variable, which every ``VM`` built without an explicit ``executor`` (including
``Program.to_vm()`` and subprocesses) follows. Tracing VMs always use the cycle model.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sim.vm import EXECUTOR_ENV

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
