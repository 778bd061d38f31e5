"""TFLite Model Metadata flatbuffer schema (generated code, vendored; see PROVENANCE.md)."""
