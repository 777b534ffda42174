"""Tools: typed Python functions that a model may call, with schemas from their signatures."""

from trunkline.tools.tool import Tool, load_tool, tool

__all__ = ["Tool", "load_tool", "tool"]
