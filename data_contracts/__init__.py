"""Great Expectations data contracts: one suite per data kind, and the gate that runs them."""

from pathlib import Path

from data_contracts.gate import ContractViolation, ValidationReport, validate_snapshot


def results_dir(home_root: Path) -> Path:
    """Where contract results of a project home go: JSON, and a GX project with Data Docs."""
    return Path(home_root) / "validations"


__all__ = ["ContractViolation", "ValidationReport", "results_dir", "validate_snapshot"]
