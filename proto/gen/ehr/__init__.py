"""Python code generated from proto/ehr by `make proto`. Never edit by hand."""
