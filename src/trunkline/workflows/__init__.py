"""Workflows of tool, model and post-process steps, and batch runs over datasets."""

from trunkline.workflows.as_tool import workflow_function, workflow_tool
from trunkline.workflows.datasets import Dataset, load_dataset
from trunkline.workflows.runner import BatchRunner
from trunkline.workflows.spec import WorkflowSpec, load_workflow
from trunkline.workflows.summary import RunSummary

__all__ = [
    "BatchRunner",
    "Dataset",
    "RunSummary",
    "WorkflowSpec",
    "load_dataset",
    "load_workflow",
    "workflow_function",
    "workflow_tool",
]
