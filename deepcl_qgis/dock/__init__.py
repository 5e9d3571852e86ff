"""The DeepCL dock panel: one-click change detection, run as a background Processing task."""
