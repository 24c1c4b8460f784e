"""Sub-models of SecurityPolicy, one module per section."""
