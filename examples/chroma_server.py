"""FintsChatModel with its memory on a Chroma server, which every process of an app shares.

Start a server (the ``chroma`` command comes with chromadb), then run this script:

    chroma run --path ./chroma-data --host 127.0.0.1 --port 8000
    python examples/chroma_server.py http://127.0.0.1:8000

The URL is the first argument, else $FINTS_MEMORY_STORE (which ``fints-agent memory`` reads
too), else http://127.0.0.1:8000. ``fints-agent memory list carol --store URL`` shows what the
server keeps.
"""

import os
import sys
from typing import Literal

from langchain_core.tools import tool

from fints_agent import FintsChatModel

url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FINTS_MEMORY_STORE")
url = url or "http://127.0.0.1:8000"


@tool
def get_weather(city: str, units: Literal["celsius", "fahrenheit"]) -> str:
    """Current weather in a city, in the given units."""
    return f"{city}: 18 degrees {units}."


tools = [get_weather]
# The same model as with a directory; only the memory's location differs.
llm = FintsChatModel(memory=url, max_tokens=48, copy_strings=True)
memory = llm.get_memory()  # fails at once if the server does not answer
memory.forget_user("carol")  # start the example's user afresh on every run

# Feedback written here is on the server: any other process using `url` is steered by it.
llm.record_feedback(
    "carol",
    [("user", "What's the weather in Boston?")],
    tools,
    {"name": "get_weather", "arguments": {"city": "Boston", "units": "fahrenheit"}},
    rejected=[{"name": "get_weather", "arguments": {"city": "Boston", "units": "celsius"}}],
)

ai = llm.bind_tools(tools).invoke([("user", "How warm is it in Denver?")], user_id="carol")
print("carol", [(c["name"], c["args"]) for c in ai.tool_calls])
print(ai.response_metadata["fints"])  # the trajectory on the server that steered the call
stats = memory.store.stats()
print(f"{stats['location']}: {stats['users']} users, {stats['trajectories']} trajectories")
