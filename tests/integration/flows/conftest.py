import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    """One temporary Prefect API for all flow tests (starting one costs ~10 s), with the
    project's loggers forwarded to flow-run logs as the CLI and the worker set them up."""
    from prefect.logging.configuration import setup_logging
    from prefect.settings import (
        PREFECT_LOGGING_EXTRA_LOGGERS,
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    from aigc_core import provenance

    with (
        prefect_test_harness(server_startup_timeout=60),
        temporary_settings(
            {
                PREFECT_LOGGING_EXTRA_LOGGERS: ",".join(provenance.PACKAGES),
                PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore",  # as the CLI and worker
            }
        ),
    ):
        setup_logging(incremental=False)
        yield
