"""A LangChain agent on FintsChatModel for two users; feedback steers alice's next turns."""

from langchain.agents import create_agent
from langchain_core.tools import tool

from fints_agent import FintsChatModel


# return_direct: the tool's result is the agent's answer, so a request takes one model turn.
@tool(return_direct=True)
def get_transit_directions(origin: str, destination: str) -> str:
    """Public transit directions between two places."""
    return f"Take the bus from {origin} to {destination}."


@tool(return_direct=True)
def book_ride(pickup: str, dropoff: str) -> str:
    """Book a taxi ride."""
    return f"A taxi from {pickup} to {dropoff} is on its way."


tools = [get_transit_directions, book_ride]
# Embedded Chroma in ./memory (or a Chroma server: "http://host:8000"). copy_strings: free
# string arguments are copied from the request, as a 135M model cannot be trusted to.
llm = FintsChatModel(memory="./memory", max_tokens=48, copy_strings=True)
agent = create_agent(llm, tools=tools)

# Feedback: the chosen call (and optionally the rejected ones) steer the user's next turns.
llm.record_feedback(
    "alice",
    [("user", "Get me from the office to the station")],
    tools,
    {"name": "book_ride", "arguments": {"pickup": "office", "dropoff": "station"}},
    rejected=[
        {
            "name": "get_transit_directions",
            "arguments": {"origin": "office", "destination": "station"},
        }
    ],
)

# The user id travels in the agent's config.
for user in ("alice", "bob"):
    state = agent.invoke(
        {"messages": [("user", "Get me from home to the airport")]},
        config={"configurable": {"user_id": user}},
    )
    ai = state["messages"][1]
    print(user, [(c["name"], c["args"]) for c in ai.tool_calls])  # schema-valid calls only
    print(ai.response_metadata["fints"])  # which trajectories steered it, with what weights
