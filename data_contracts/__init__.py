"""Great Expectations data contracts: one suite per data kind, and the gate that runs them."""

from data_contracts.gate import ContractViolation, ValidationReport, validate_snapshot

__all__ = ["ContractViolation", "ValidationReport", "validate_snapshot"]
