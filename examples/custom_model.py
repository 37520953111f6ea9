"""FintsChatModel on a model you load yourself: any local Hugging Face causal LM.

    python examples/custom_model.py /path/to/model   # a save_pretrained() directory, or a
                                                     # model id in the local Hugging Face cache

Without an argument, the example first writes the embedded default model to ./my-model with
transformers' save_pretrained(), as a stand-in for a model of your own. The model is loaded
with transformers and given to the chat model as it is (model= and tokenizer=); a directory
name works too (model="./my-model", with model_kwargs={"device_map": "auto"} or a
quantization_config passed through to from_pretrained).
"""

import sys
from pathlib import Path

from langchain_core.tools import tool
from transformers import AutoModelForCausalLM, AutoTokenizer

from fints_agent import FintsChatModel, Preset, SteeringConfig, load_model

model_dir = sys.argv[1] if len(sys.argv) > 1 else "./my-model"
if len(sys.argv) == 1 and not Path(model_dir, "config.json").is_file():
    default = load_model()  # the embedded default: a transformers model and its tokenizer
    default.model.save_pretrained(model_dir)
    default.tokenizer.save_pretrained(model_dir)


@tool
def get_transit_directions(origin: str, destination: str) -> str:
    """Public transit directions between two places."""
    return f"Take the bus from {origin} to {destination}."


@tool
def book_ride(pickup: str, dropoff: str) -> str:
    """Book a taxi ride."""
    return f"A taxi from {pickup} to {dropoff} is on its way."


tools = [get_transit_directions, book_ride]
# A model without a tuned preset steers with the defaults; this steers the later two thirds of
# its layers at the deciding tokens, as the default model's preset does. `fints-agent tune
# --model DIR` finds better settings for the model and saves them as its preset.
model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
layers = model.config.num_hidden_layers
steering = SteeringConfig(
    layers=list(range(layers // 3, layers)), coefficient=4.0, gate="decisions", steer_prompt=False
)
llm = FintsChatModel(
    model=model,  # its dtype and device are the model's own
    tokenizer=tokenizer,
    steering=steering,
    memory="./memory-custom",  # a memory holds the vectors of one model only
    max_tokens=48,
    copy_strings=True,
)
lm = llm.load()
# The fingerprint names the model's preset, which supplies every option not set here: "preset"
# for a copy of the default model (its shipped preset), "saved" after `fints-agent tune`,
# "default" for any other model.
print(lm.name, lm.num_layers, "layers", lm.fingerprint, Preset.source_for(lm.fingerprint))

llm.get_memory().forget_user("dana")  # start the example's user afresh on every run
llm.record_feedback(
    "dana",
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
# dana's turn is steered by her feedback; erin has no history, so hers is not.
for user in ("dana", "erin"):
    ai = llm.bind_tools(tools).invoke([("user", "Get me from home to the airport")], user_id=user)
    print(user, [(c["name"], c["args"]) for c in ai.tool_calls])
    print(ai.response_metadata["fints"])
