//! Workflow DAGs (being written).
