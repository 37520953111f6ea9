"""Generates a seeded, personalized web-API tool-calling dataset (JSON Lines).

Simulated users hold latent preferences over tools and argument values in seven domains:
shopping (PersonalWAB-style search / recommend / review), music, maps, weather, news, messaging
and food delivery. Every request is ambiguous without the user's history: "Get me to City
Airport from Oak Street Office." is a transit-directions call for one user and a ride request for
another; "What's the weather in Oslo tomorrow?" needs the user's units.

Users come in three kinds:

* ``sparse``: 1-3 past turns per domain;
* ``dense``: 20+ past turns in one or two domains (and a sparse one);
* ``changed``: in one or two domains the preference changed: older history prefers X, recent
  history and the test turns prefer Y.

Each record has the ``chosen`` call, ``rejected`` calls (other tools or other preference values
for the same request, serialized like ``chosen``), ``graded_args`` (arguments copied from the
request or fixed by a preference) and a ``meta`` dict (domain, user kind, preference phase,
request family, which graded arguments are copied and which are preferences).

Usage::

    python tools/make_personal_dataset.py --seed 0 --out examples/data/personal_webapi.jsonl
    python tools/make_personal_dataset.py --small --out tests/data/personal_small.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

DOMAINS = ("shopping", "music", "maps", "weather", "news", "messaging", "food")


# --------------------------------------------------------------------------------------------
# Tools (OpenAI function-tool objects)
# --------------------------------------------------------------------------------------------


def _tool(name: str, description: str, properties: JSON, required: list[str]) -> JSON:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


GENRES = ["jazz", "lo-fi", "classical", "hip-hop", "rock", "ambient"]
TRAVEL_MODES = ["driving", "walking", "cycling", "transit"]
RIDE_TYPES = ["economy", "comfort", "xl", "shared"]
UNITS = ["celsius", "fahrenheit"]
NEWS_SOURCES = ["bbc", "reuters", "associated_press", "the_guardian", "al_jazeera"]
NEWS_CATEGORIES = ["world", "business", "technology", "science", "sports", "health"]
CUISINES = ["italian", "thai", "indian", "mexican", "japanese", "lebanese"]
FOOD_SERVICES = ["ubereats", "doordash", "deliveroo"]

TOOLS: dict[str, list[JSON]] = {
    "shopping": [
        _tool(
            "search_product_by_query",
            "Search the product catalog with a free-text query.",
            {
                "query": {"type": "string", "description": "What to search for."},
                "max_price": {
                    "type": "number",
                    "minimum": 0,
                    "description": "Highest price in USD.",
                },
                "sort_by": {
                    "type": "string",
                    "enum": ["relevance", "price_low_to_high", "rating"],
                    "description": "Result order.",
                },
            },
            ["query"],
        ),
        _tool(
            "get_recommendations_by_history",
            "Recommend products from a sequence of products the user bought or viewed.",
            {
                "product_sequence": {
                    "type": "array",
                    "items": {"type": "string", "description": "A product ASIN."},
                    "minItems": 1,
                    "description": "ASINs of products, oldest first.",
                },
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 20,
                    "description": "How many recommendations.",
                },
            },
            ["product_sequence"],
        ),
        _tool(
            "add_product_review",
            "Post the user's review of a product they bought.",
            {
                "asin": {"type": "string", "description": "ASIN of the reviewed product."},
                "review": {"type": "string", "description": "The review text."},
                "rating": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 5,
                    "description": "Stars, 1 to 5.",
                },
            },
            ["review"],
        ),
    ],
    "music": [
        _tool(
            "spotify_play",
            "Play music on Spotify.",
            {
                "query": {"type": "string", "description": "Artist, track, album or mood."},
                "genre": {"type": "string", "enum": GENRES, "description": "Genre filter."},
                "shuffle": {"type": "boolean", "description": "Shuffle the queue."},
            },
            ["query"],
        ),
        _tool(
            "youtube_music_play",
            "Play music on YouTube Music.",
            {
                "query": {"type": "string", "description": "Artist, track, album or mood."},
                "genre": {"type": "string", "enum": GENRES, "description": "Genre filter."},
                "with_video": {"type": "boolean", "description": "Show the music video."},
            },
            ["query"],
        ),
    ],
    "maps": [
        _tool(
            "get_directions",
            "Route from an origin to a destination.",
            {
                "origin": {"type": "string", "description": "Start place."},
                "destination": {"type": "string", "description": "End place."},
                "mode": {"type": "string", "enum": TRAVEL_MODES, "description": "How to travel."},
                "avoid_tolls": {"type": "boolean", "description": "Avoid toll roads."},
            },
            ["origin", "destination", "mode"],
        ),
        _tool(
            "request_ride",
            "Book a ride-hailing car.",
            {
                "pickup": {"type": "string", "description": "Pickup place."},
                "dropoff": {"type": "string", "description": "Drop-off place."},
                "ride_type": {"type": "string", "enum": RIDE_TYPES, "description": "Car class."},
                "passengers": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 6,
                    "description": "Number of riders.",
                },
            },
            ["pickup", "dropoff", "ride_type"],
        ),
    ],
    "weather": [
        _tool(
            "get_current_weather",
            "Current conditions for a city.",
            {
                "location": {"type": "string", "description": "City name."},
                "units": {"type": "string", "enum": UNITS, "description": "Temperature unit."},
            },
            ["location", "units"],
        ),
        _tool(
            "get_weather_forecast",
            "Daily forecast for a city, starting tomorrow.",
            {
                "location": {"type": "string", "description": "City name."},
                "days": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 10,
                    "description": "Number of days, starting tomorrow.",
                },
                "units": {"type": "string", "enum": UNITS, "description": "Temperature unit."},
            },
            ["location", "days", "units"],
        ),
    ],
    "news": [
        _tool(
            "get_top_headlines",
            "Top headlines of a news category from one source.",
            {
                "category": {"type": "string", "enum": NEWS_CATEGORIES},
                "source": {"type": "string", "enum": NEWS_SOURCES, "description": "Outlet."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 20},
            },
            ["category", "source"],
        ),
        _tool(
            "search_news",
            "Search recent articles from one source.",
            {
                "query": {"type": "string", "description": "Topic, person or organization."},
                "source": {"type": "string", "enum": NEWS_SOURCES, "description": "Outlet."},
                "sort_by": {"type": "string", "enum": ["relevance", "newest"]},
            },
            ["query", "source"],
        ),
    ],
    "messaging": [
        _tool(
            "send_sms",
            "Send a text message to a contact.",
            {
                "recipient": {"type": "string", "description": "Contact name."},
                "message": {"type": "string", "description": "Message text."},
            },
            ["recipient", "message"],
        ),
        _tool(
            "send_email",
            "Send an email to a contact.",
            {
                "recipient": {"type": "string", "description": "Contact name."},
                "subject": {"type": "string", "description": "Subject line."},
                "body": {"type": "string", "description": "Email body."},
            },
            ["recipient", "body"],
        ),
        _tool(
            "send_slack_message",
            "Send a direct message on Slack.",
            {
                "recipient": {"type": "string", "description": "Contact name."},
                "text": {"type": "string", "description": "Message text."},
                "urgent": {"type": "boolean", "description": "Mark as urgent."},
            },
            ["recipient", "text"],
        ),
    ],
    "food": [
        _tool(
            "search_restaurants",
            "Find restaurants that deliver, on one delivery service.",
            {
                "cuisine": {"type": "string", "enum": CUISINES},
                "service": {"type": "string", "enum": FOOD_SERVICES},
                "max_delivery_minutes": {"type": "integer", "minimum": 10, "maximum": 120},
                "open_now": {"type": "boolean"},
            },
            ["cuisine", "service"],
        ),
        _tool(
            "place_order",
            "Order dishes from a restaurant through a delivery service.",
            {
                "restaurant": {"type": "string", "description": "Restaurant name."},
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "quantity": {"type": "integer", "minimum": 1},
                        },
                        "required": ["name", "quantity"],
                        "additionalProperties": False,
                    },
                },
                "service": {"type": "string", "enum": FOOD_SERVICES},
                "tip_percent": {"type": "number", "minimum": 0, "maximum": 50},
            },
            ["restaurant", "items", "service"],
        ),
    ],
}


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

PRODUCTS = [
    "wireless earbuds",
    "running shoes",
    "espresso machine",
    "yoga mat",
    "mechanical keyboard",
    "air fryer",
    "hiking backpack",
    "electric toothbrush",
    "desk lamp",
    "phone case",
    "noise-cancelling headphones",
    "water bottle",
    "robot vacuum",
    "fitness tracker",
    "cast iron skillet",
    "portable charger",
    "bluetooth speaker",
    "office chair",
    "rain jacket",
    "chef's knife",
    "camping tent",
    "smart thermostat",
    "gaming mouse",
    "french press",
    "winter gloves",
    "sunglasses",
    "laptop stand",
    "wall clock",
    "board game",
    "bike helmet",
    "scented candle",
    "silk pillowcase",
]
OPINIONS = [
    "the battery barely lasts a day",
    "it works better than I expected",
    "the quality feels cheap for the price",
    "it arrived scratched but works fine",
    "I use it every single day now",
    "setup took five minutes and it just works",
    "the color is different from the photos",
    "it is a bit noisy but does the job",
    "honestly the best purchase this year",
    "the instructions were useless",
    "it broke after two weeks",
    "my whole family loves it",
    "it is smaller than I thought",
    "great value, would buy again",
]
SHOP_TEMPLATES = [
    "I just bought the {product} ({asin}) and {opinion}.",
    "My {product} purchase arrived today, item {asin}. Honestly, {opinion}.",
    "About the {product} I bought ({asin}): {opinion}.",
    "I've been using the {product} I bought ({asin}) for a week; {opinion}.",
    "The {product} I purchased ({asin}) finally came and {opinion}.",
    "Quick update on my {product} purchase, item {asin}: {opinion}.",
]

ARTISTS = [
    "Norah Jones",
    "Miles Davis",
    "Billie Eilish",
    "Daft Punk",
    "Taylor Swift",
    "Radiohead",
    "Kendrick Lamar",
    "Adele",
    "Coldplay",
    "Nina Simone",
    "Fleetwood Mac",
    "Hans Zimmer",
    "Bon Iver",
    "Arctic Monkeys",
    "Beyonce",
    "Ludovico Einaudi",
    "The Beatles",
    "Dua Lipa",
    "Tame Impala",
    "Frank Ocean",
    "Yo-Yo Ma",
    "Brian Eno",
]
ARTIST_TEMPLATES = [
    "Play some {artist}.",
    "Put on some {artist} music.",
    "I want to listen to {artist} songs.",
    "Can you play {artist} for me?",
    "Play a few songs by {artist}.",
    "Music time: play {artist}.",
]
ACTIVITIES = [
    "studying",
    "cooking dinner",
    "a long drive",
    "the gym",
    "a rainy afternoon",
    "falling asleep",
    "a dinner party",
    "deep focus",
    "cleaning the flat",
    "my morning run",
]
ACTIVITY_TEMPLATES = [
    "Play some music for {activity}.",
    "Put on music for {activity}.",
    "I need a music playlist for {activity}.",
    "Play songs for {activity}, please.",
    "Play some tunes for {activity}.",
]

PLACES = [
    "Central Station",
    "City Airport",
    "Riverside Mall",
    "Oak Street Office",
    "Union Square",
    "Greenfield Park",
    "St. Mary's Hospital",
    "Northgate Stadium",
    "Old Town Library",
    "Harbor View Hotel",
    "Westside Gym",
    "Lakeside Campus",
    "Pine Street Cafe",
    "Museum of Art",
    "Bayfront Ferry Terminal",
    "Maple Avenue School",
    "Civic Center",
    "Eastgate Market",
    "Convention Center",
    "Sunset Beach",
    "Hillcrest Clinic",
    "Grand Theater",
]
TRAVEL_TEMPLATES = [
    "Get me to {dest} from {origin}.",
    "How do I get from {origin} to {dest}?",
    "I need to get to {dest} from {origin}.",
    "Take me from {origin} to {dest}.",
    "Best way to get from {origin} to {dest}?",
    "I'm at {origin} and need to get to {dest}.",
]

CITIES = [
    "Oslo",
    "Lisbon",
    "Chicago",
    "Tokyo",
    "Nairobi",
    "Toronto",
    "Madrid",
    "Seoul",
    "Denver",
    "Dublin",
    "Sydney",
    "Reykjavik",
    "Mumbai",
    "Austin",
    "Vienna",
    "Cape Town",
    "Helsinki",
    "Boston",
    "Lima",
    "Prague",
]
CURRENT_TEMPLATES = [
    "What's the weather like in {city}?",
    "What's the temperature in {city} right now?",
    "Is it cold in {city}? Check the weather.",
    "Current weather and temperature in {city}?",
    "Check the weather in {city} for me.",
]
FORECAST_TOMORROW_TEMPLATES = [
    "What's the weather in {city} tomorrow?",
    "Will it be hot in {city} tomorrow? Check the forecast.",
    "Weather forecast for {city} tomorrow?",
]
FORECAST_DAYS_TEMPLATES = [
    "Give me the {days}-day weather forecast for {city}.",
    "What will the weather be in {city} over the next {days} days?",
    "Weather forecast for {city}, next {days} days.",
]

HEADLINE_TEMPLATES = [
    "What's new in {category} news?",
    "Any {category} news headlines today?",
    "Catch me up on {category} news.",
    "Top {category} news stories, please.",
    "Give me the latest {category} news headlines.",
]
ENTITIES = [
    "the Mars sample mission",
    "electric car batteries",
    "the World Cup qualifiers",
    "the central bank rate decision",
    "the heat wave in Europe",
    "the new vaccine trial",
    "chip export rules",
    "the climate summit",
    "the merger of two airlines",
    "the housing market",
    "quantum computing startups",
    "the Olympic marathon",
    "the drought in East Africa",
    "the AI safety bill",
]
SEARCH_NEWS_TEMPLATES = [
    "Any news about {entity}?",
    "What's the latest news on {entity}?",
    "Find recent news coverage of {entity}.",
    "Has there been news about {entity}?",
    "Search the news for {entity}.",
]

CONTACTS = [
    "Dana",
    "Marcus",
    "Priya",
    "Tom",
    "Ingrid",
    "Kenji",
    "Fatima",
    "Luis",
    "Olivia",
    "Mom",
    "Grandpa Joe",
    "Aisha",
    "Ben",
    "Chloe",
    "Diego",
    "Hannah",
    "Ivan",
    "Mei",
]
MESSAGE_BODIES = [
    "I'm running ten minutes late",
    "the meeting moved to 3 pm",
    "dinner is at eight tonight",
    "I left the keys at the front desk",
    "the report is ready for review",
    "I'll pick up the kids today",
    "the flight landed safely",
    "can we push our call to Monday",
    "happy birthday",
    "the package arrived",
    "I'm bringing dessert on Saturday",
    "the slides are in the shared folder",
]
MESSAGE_TEMPLATES = [
    "Tell {name} that {body}.",
    "Let {name} know that {body}.",
    "Send {name} a message: {body}.",
    "Message {name}: {body}.",
    "Send a note to {name} saying {body}.",
    "Please message {name} that {body}.",
]

HUNGRY_TEMPLATES = [
    "I'm hungry, find me food delivery for dinner.",
    "What food can I get delivered for lunch?",
    "Find me a food delivery place for tonight.",
    "I'm hungry, show me some food delivery options.",
    "Nothing in the fridge, find food delivery nearby.",
]
HUNGRY_FAST_TEMPLATES = [
    "I'm hungry, find food delivery that arrives within {minutes} minutes.",
    "Find food delivered in under {minutes} minutes.",
]
RESTAURANTS = [
    "Luigi's Trattoria",
    "Bangkok Garden",
    "Spice Route",
    "Taqueria El Sol",
    "Sakura House",
    "Cedar Grill",
    "Mama Rosa",
    "Lotus Kitchen",
    "Curry Corner",
    "Casa Verde",
    "Umami Bar",
    "Byblos Kitchen",
]
DISHES = [
    "margherita pizza",
    "pad thai",
    "chicken tikka masala",
    "beef burrito",
    "salmon nigiri",
    "falafel wrap",
    "lasagna",
    "green curry",
    "lamb biryani",
    "fish tacos",
    "ramen",
    "hummus plate",
    "garlic naan",
    "spring rolls",
]
ORDER_TEMPLATES = [
    "Order {qty} portions of {dish} from {restaurant} for delivery.",
    "Get me {qty} servings of {dish} delivered from {restaurant}.",
    "I'd like {qty} orders of {dish} from {restaurant} delivered, please.",
    "Order food: {qty} portions of {dish} from {restaurant}.",
]


# --------------------------------------------------------------------------------------------
# Requests and the calls they map to
# --------------------------------------------------------------------------------------------


@dataclass
class Request:
    """A generated request and a function from preference values to calls."""

    family: str
    text: str
    copied: dict[str, Any]
    """The slot values written into the request text."""
    build: Callable[[dict[str, str]], tuple[JSON, list[str], list[str]]]
    """Maps a preference to (call, copied graded args, preference graded args)."""


def _call(name: str, arguments: JSON) -> JSON:
    return {"name": name, "arguments": arguments}


def _shopping_request(rng: random.Random, vocab: Vocab) -> Request:
    product = rng.choice(PRODUCTS)
    asin = vocab.asins[product]
    opinion = rng.choice(OPINIONS)
    text = rng.choice(SHOP_TEMPLATES).format(product=product, asin=asin, opinion=opinion)

    def build(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        tool = pref["tool"]
        if tool == "search_product_by_query":
            return _call(tool, {"query": product}), ["query"], []
        if tool == "get_recommendations_by_history":
            return _call(tool, {"product_sequence": [asin]}), ["product_sequence"], []
        return _call(tool, {"asin": asin, "review": opinion}), ["asin"], []

    return Request("product_update", text, {"product": product, "asin": asin}, build)


def _music_request(rng: random.Random, vocab: Vocab) -> Request:
    if rng.random() < 0.5:
        artist = rng.choice(ARTISTS)
        text = rng.choice(ARTIST_TEMPLATES).format(artist=artist)

        def build_artist(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            return _call(pref["service"], {"query": artist}), ["query"], []

        return Request("play_artist", text, {"artist": artist}, build_artist)
    activity = rng.choice(ACTIVITIES)
    text = rng.choice(ACTIVITY_TEMPLATES).format(activity=activity)

    def build_mood(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        call = _call(pref["service"], {"query": activity, "genre": pref["genre"]})
        return call, [], ["genre"]

    return Request("play_for_activity", text, {"activity": activity}, build_mood)


def _maps_request(rng: random.Random, vocab: Vocab) -> Request:
    origin, dest = rng.sample(PLACES, 2)
    text = rng.choice(TRAVEL_TEMPLATES).format(origin=origin, dest=dest)

    def build(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        tool, value = pref["travel"].split(":")
        if tool == "get_directions":
            call = _call(tool, {"origin": origin, "destination": dest, "mode": value})
            return call, ["origin", "destination"], ["mode"]
        call = _call(tool, {"pickup": origin, "dropoff": dest, "ride_type": value})
        return call, ["pickup", "dropoff"], ["ride_type"]

    return Request("route", text, {"origin": origin, "destination": dest}, build)


def _weather_request(rng: random.Random, vocab: Vocab) -> Request:
    city = rng.choice(CITIES)
    roll = rng.random()
    if roll < 0.4:
        text = rng.choice(CURRENT_TEMPLATES).format(city=city)

        def build_now(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            call = _call("get_current_weather", {"location": city, "units": pref["units"]})
            return call, ["location"], ["units"]

        return Request("current", text, {"city": city}, build_now)
    if roll < 0.7:
        text = rng.choice(FORECAST_TOMORROW_TEMPLATES).format(city=city)

        def build_tomorrow(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            args = {"location": city, "days": 1, "units": pref["units"]}
            return _call("get_weather_forecast", args), ["location"], ["units"]

        return Request("forecast_tomorrow", text, {"city": city}, build_tomorrow)
    days = rng.randint(2, 7)
    text = rng.choice(FORECAST_DAYS_TEMPLATES).format(city=city, days=days)

    def build_days(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        args = {"location": city, "days": days, "units": pref["units"]}
        return _call("get_weather_forecast", args), ["location", "days"], ["units"]

    return Request("forecast_days", text, {"city": city, "days": days}, build_days)


def _news_request(rng: random.Random, vocab: Vocab) -> Request:
    if rng.random() < 0.5:
        category = rng.choice(NEWS_CATEGORIES)
        text = rng.choice(HEADLINE_TEMPLATES).format(category=category)

        def build_top(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            call = _call("get_top_headlines", {"category": category, "source": pref["source"]})
            return call, ["category"], ["source"]

        return Request("headlines", text, {"category": category}, build_top)
    entity = rng.choice(ENTITIES)
    text = rng.choice(SEARCH_NEWS_TEMPLATES).format(entity=entity)

    def build_search(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        call = _call("search_news", {"query": entity, "source": pref["source"]})
        return call, ["query"], ["source"]

    return Request("search", text, {"entity": entity}, build_search)


def _messaging_request(rng: random.Random, vocab: Vocab) -> Request:
    name = rng.choice(CONTACTS)
    body = rng.choice(MESSAGE_BODIES)
    text = rng.choice(MESSAGE_TEMPLATES).format(name=name, body=body)
    text = text[0].upper() + text[1:]
    message = body[0].upper() + body[1:] + "."

    def build(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        tool = pref["channel"]
        if tool == "send_sms":
            return _call(tool, {"recipient": name, "message": message}), ["recipient"], []
        if tool == "send_email":
            args = {"recipient": name, "subject": message.rstrip("."), "body": message}
            return _call(tool, args), ["recipient"], []
        return _call(tool, {"recipient": name, "text": message}), ["recipient"], []

    return Request("tell_contact", text, {"name": name}, build)


def _food_request(rng: random.Random, vocab: Vocab) -> Request:
    roll = rng.random()
    if roll < 0.45:
        text = rng.choice(HUNGRY_TEMPLATES)

        def build_any(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            args = {"cuisine": pref["cuisine"], "service": pref["service"]}
            return _call("search_restaurants", args), [], ["cuisine", "service"]

        return Request("hungry", text, {}, build_any)
    if roll < 0.6:
        minutes = rng.choice([20, 25, 30, 40, 45])
        text = rng.choice(HUNGRY_FAST_TEMPLATES).format(minutes=minutes)

        def build_fast(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            args = {
                "cuisine": pref["cuisine"],
                "service": pref["service"],
                "max_delivery_minutes": minutes,
            }
            graded = ["cuisine", "service"]
            return _call("search_restaurants", args), ["max_delivery_minutes"], graded

        return Request("hungry_fast", text, {"minutes": minutes}, build_fast)
    restaurant = rng.choice(RESTAURANTS)
    dish = rng.choice(DISHES)
    qty = rng.randint(2, 4)
    text = rng.choice(ORDER_TEMPLATES).format(qty=qty, dish=dish, restaurant=restaurant)

    def build_order(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        args = {
            "restaurant": restaurant,
            "items": [{"name": dish, "quantity": qty}],
            "service": pref["service"],
        }
        return _call("place_order", args), ["restaurant", "items"], ["service"]

    return Request("order", text, {"restaurant": restaurant, "dish": dish, "qty": qty}, build_order)


@dataclass
class Vocab:
    """Seeded vocabulary shared by all users (product ASINs)."""

    asins: dict[str, str]


REQUESTS: dict[str, Callable[[random.Random, Vocab], Request]] = {
    "shopping": _shopping_request,
    "music": _music_request,
    "maps": _maps_request,
    "weather": _weather_request,
    "news": _news_request,
    "messaging": _messaging_request,
    "food": _food_request,
}

PREFERENCE_OPTIONS: dict[str, dict[str, list[str]]] = {
    "shopping": {
        "tool": [
            "search_product_by_query",
            "get_recommendations_by_history",
            "add_product_review",
        ]
    },
    "music": {"service": ["spotify_play", "youtube_music_play"], "genre": GENRES},
    "maps": {
        "travel": [
            "get_directions:transit",
            "get_directions:driving",
            "get_directions:cycling",
            "request_ride:economy",
            "request_ride:comfort",
        ]
    },
    "weather": {"units": UNITS},
    "news": {"source": NEWS_SOURCES},
    "messaging": {"channel": ["send_sms", "send_email", "send_slack_message"]},
    "food": {"cuisine": CUISINES, "service": FOOD_SERVICES},
}
"""Latent preference dimensions per domain and their values."""

MAIN_DIMENSION = {
    "shopping": "tool",
    "music": "service",
    "maps": "travel",
    "weather": "units",
    "news": "source",
    "messaging": "channel",
    "food": "cuisine",
}
"""The dimension that changes for users whose preference changed."""

MAX_REJECTED = 3


# --------------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------------


@dataclass
class DomainPlan:
    """How one user uses one domain."""

    domain: str
    preference: dict[str, str]
    n_history: int
    n_test: int
    old_preference: dict[str, str] | None = None
    n_old: int = 0


@dataclass
class UserPlan:
    """A simulated user."""

    user_id: str
    kind: str
    domains: list[DomainPlan] = field(default_factory=list)


@dataclass(frozen=True)
class Config:
    """Sizes of the generated dataset."""

    n_sparse: int = 12
    n_dense: int = 8
    n_changed: int = 8
    sparse_domains: tuple[int, int] = (3, 4)
    sparse_history: tuple[int, int] = (1, 3)
    dense_domains: int = 1
    dense_extra_domains: int = 2
    dense_history: tuple[int, int] = (20, 26)
    changed_domains: tuple[int, int] = (1, 2)
    changed_extra_domains: int = 1
    changed_old: tuple[int, int] = (6, 9)
    changed_new: tuple[int, int] = (3, 5)
    test_per_domain: int = 3
    noise: float = 0.05


SMALL = Config(
    n_sparse=1,
    n_dense=1,
    n_changed=1,
    sparse_domains=(2, 2),
    sparse_history=(1, 1),
    dense_domains=1,
    dense_extra_domains=0,
    dense_history=(20, 20),
    changed_domains=(1, 1),
    changed_extra_domains=0,
    changed_old=(3, 3),
    changed_new=(2, 2),
    test_per_domain=2,
    noise=0.0,
)


def _random_preference(rng: random.Random, domain: str) -> dict[str, str]:
    return {dim: rng.choice(values) for dim, values in PREFERENCE_OPTIONS[domain].items()}


def _pick_domains(rng: random.Random, count: int, usage: Counter[str]) -> list[str]:
    """Picks ``count`` domains, favoring the least used ones so far (balanced coverage)."""
    order = sorted(DOMAINS, key=lambda d: (usage[d], rng.random()))
    chosen = order[:count]
    usage.update(chosen)
    return chosen


def plan_users(config: Config, rng: random.Random) -> list[UserPlan]:
    """Draws the simulated users and how each uses each of their domains.

    Args:
        config: Dataset sizes.
        rng: The seeded random generator.

    Returns:
        The user plans, sparse users first, then dense, then changed.
    """
    usage: Counter[str] = Counter()
    users: list[UserPlan] = []
    kinds = (
        ["sparse"] * config.n_sparse + ["dense"] * config.n_dense + ["changed"] * config.n_changed
    )
    for index, kind in enumerate(kinds):
        user = UserPlan(f"u{index + 1:02d}", kind)
        if kind == "sparse":
            for domain in _pick_domains(rng, rng.randint(*config.sparse_domains), usage):
                n_history = rng.randint(*config.sparse_history)
                plan = DomainPlan(
                    domain, _random_preference(rng, domain), n_history, config.test_per_domain
                )
                user.domains.append(plan)
        elif kind == "dense":
            domains = _pick_domains(rng, config.dense_domains + config.dense_extra_domains, usage)
            for position, domain in enumerate(domains):
                if position < config.dense_domains:
                    n_history = rng.randint(*config.dense_history)
                else:
                    n_history = rng.randint(*config.sparse_history)
                plan = DomainPlan(
                    domain, _random_preference(rng, domain), n_history, config.test_per_domain
                )
                user.domains.append(plan)
        else:
            n_changed = rng.randint(*config.changed_domains)
            for position, domain in enumerate(
                _pick_domains(rng, n_changed + config.changed_extra_domains, usage)
            ):
                new = _random_preference(rng, domain)
                if position < n_changed:
                    dim = MAIN_DIMENSION[domain]
                    old = dict(new)
                    old[dim] = rng.choice(
                        [v for v in PREFERENCE_OPTIONS[domain][dim] if v != new[dim]]
                    )
                    n_old = rng.randint(*config.changed_old)
                    n_new = rng.randint(*config.changed_new)
                    plan = DomainPlan(
                        domain, new, n_old + n_new, config.test_per_domain, old, n_old
                    )
                else:
                    n_history = rng.randint(*config.sparse_history)
                    plan = DomainPlan(domain, new, n_history, config.test_per_domain)
                user.domains.append(plan)
        users.append(user)
    return users


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def _alternatives(domain: str, preference: dict[str, str]) -> list[dict[str, str]]:
    """Every preference that differs from ``preference`` in exactly one dimension."""
    out = []
    for dim, values in PREFERENCE_OPTIONS[domain].items():
        for value in values:
            if value != preference[dim]:
                out.append({**preference, dim: value})
    return out


def _make_record(
    rng: random.Random,
    vocab: Vocab,
    user: UserPlan,
    plan: DomainPlan,
    split: str,
    phase: str,
    acted: dict[str, str],
    stated: dict[str, str],
) -> JSON:
    """Builds one record: ``acted`` is the preference the chosen call follows."""
    for _ in range(50):
        request = REQUESTS[plan.domain](rng, vocab)
        chosen, copied, prefs = request.build(acted)
        # Keep the alternatives that change the call (e.g. the genre is unused by some families).
        seen = {json.dumps(chosen, sort_keys=True)}
        candidates: list[JSON] = []
        alternatives = _alternatives(plan.domain, acted)
        rng.shuffle(alternatives)
        # For a changed user, the other phase's preference is the most confusable negative.
        if plan.old_preference is not None:
            other = plan.old_preference if acted == plan.preference else plan.preference
            if other != acted:
                alternatives.insert(0, other)
        for alternative in alternatives:
            call = request.build(alternative)[0]
            key = json.dumps(call, sort_keys=True)
            if key not in seen:
                seen.add(key)
                candidates.append(call)
        if candidates:
            break
    else:  # pragma: no cover - every family has at least one alternative
        raise RuntimeError(f"no rejected call for domain {plan.domain}")
    tools = TOOLS[plan.domain]
    graded = copied + prefs
    meta = {
        "domain": plan.domain,
        "user_kind": user.kind,
        "phase": phase,
        "family": request.family,
        "preference": dict(stated),
        "copied_args": copied,
        "preference_args": prefs,
        "off_preference": acted != stated,
    }
    return {
        "user_id": user.user_id,
        "turn": -1,
        "split": split,
        "messages": [{"role": "user", "content": request.text}],
        "tools": json.loads(json.dumps(tools)),
        "chosen": chosen,
        "rejected": candidates[:MAX_REJECTED],
        "graded_args": graded,
        "meta": meta,
    }


def _user_records(rng: random.Random, vocab: Vocab, user: UserPlan, noise: float) -> list[JSON]:
    streams: list[list[JSON]] = []
    tests: list[JSON] = []
    for plan in user.domains:
        stream: list[JSON] = []
        for index in range(plan.n_history):
            if plan.old_preference is not None and index < plan.n_old:
                stated, phase = plan.old_preference, "old"
            elif plan.old_preference is not None:
                stated, phase = plan.preference, "new"
            else:
                stated, phase = plan.preference, "stable"
            acted = stated
            if user.kind == "dense" and rng.random() < noise:
                acted = rng.choice(_alternatives(plan.domain, stated))
            stream.append(_make_record(rng, vocab, user, plan, "history", phase, acted, stated))
        streams.append(stream)
        phase = "new" if plan.old_preference is not None else "stable"
        for _ in range(plan.n_test):
            record = _make_record(
                rng, vocab, user, plan, "test", phase, plan.preference, plan.preference
            )
            tests.append(record)
    # Interleave the domains' histories in time while keeping each domain's own order.
    history: list[JSON] = []
    positions = [0] * len(streams)
    while any(positions[i] < len(s) for i, s in enumerate(streams)):
        open_streams = [i for i, s in enumerate(streams) if positions[i] < len(s)]
        weights = [len(streams[i]) - positions[i] for i in open_streams]
        pick = rng.choices(open_streams, weights=weights)[0]
        history.append(streams[pick][positions[pick]])
        positions[pick] += 1
    rng.shuffle(tests)
    records = history + tests
    for turn, record in enumerate(records):
        record["turn"] = turn
    return records


def make_vocab(rng: random.Random) -> Vocab:
    """Draws one ASIN per product.

    Args:
        rng: The seeded random generator.

    Returns:
        The vocabulary.
    """
    alphabet = string.ascii_uppercase + string.digits
    asins: dict[str, str] = {}
    used: set[str] = set()
    for product in PRODUCTS:
        while True:
            asin = "B0" + "".join(rng.choice(alphabet) for _ in range(8))
            if asin not in used:
                used.add(asin)
                asins[product] = asin
                break
    return Vocab(asins)


def generate(seed: int = 0, config: Config | None = None) -> list[JSON]:
    """Generates the dataset as a list of record dicts.

    Args:
        seed: Seed of the random generator; the same seed gives the same records.
        config: Dataset sizes (default :class:`Config`).

    Returns:
        The records, grouped by user, each user's records in turn order.
    """
    config = config or Config()
    rng = random.Random(seed)
    vocab = make_vocab(rng)
    records: list[JSON] = []
    for user in plan_users(config, rng):
        records.extend(_user_records(rng, vocab, user, config.noise))
    return records


def dumps(record: JSON) -> str:
    """Serializes one record as a compact JSON line (without the newline).

    Args:
        record: The record dict.

    Returns:
        The JSON text.
    """
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def statistics(records: Sequence[JSON]) -> JSON:
    """Counts users by kind and records by split, domain and user kind.

    Args:
        records: Generated records (with ``meta``).

    Returns:
        A JSON-serializable summary.
    """
    kinds: dict[str, str] = {}
    by_split: Counter[str] = Counter()
    by_domain: dict[str, Counter[str]] = {}
    by_kind: dict[str, Counter[str]] = {}
    for record in records:
        meta = record.get("meta", {})
        kinds[record["user_id"]] = meta.get("user_kind", "?")
        by_split[record["split"]] += 1
        by_domain.setdefault(meta.get("domain", "?"), Counter())[record["split"]] += 1
        by_kind.setdefault(meta.get("user_kind", "?"), Counter())[record["split"]] += 1
    return {
        "users": len(kinds),
        "users_by_kind": dict(sorted(Counter(kinds.values()).items())),
        "records": len(records),
        "records_by_split": dict(sorted(by_split.items())),
        "records_by_domain": {d: dict(sorted(c.items())) for d, c in sorted(by_domain.items())},
        "records_by_user_kind": {k: dict(sorted(c.items())) for k, c in sorted(by_kind.items())},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("examples/data/personal_webapi.jsonl"),
        help="output .jsonl file",
    )
    parser.add_argument("--small", action="store_true", help="a tiny variant (3 users) for tests")
    default = Config()
    parser.add_argument(
        "--n-sparse", type=int, default=None, help=f"sparse users ({default.n_sparse})"
    )
    parser.add_argument(
        "--n-dense", type=int, default=None, help=f"dense users ({default.n_dense})"
    )
    parser.add_argument(
        "--n-changed", type=int, default=None, help=f"changed users ({default.n_changed})"
    )
    parser.add_argument(
        "--test-per-domain",
        type=int,
        default=None,
        help=f"test turns per user and domain ({default.test_per_domain})",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=None,
        help=f"share of off-preference history turns of dense users ({default.noise})",
    )
    parser.add_argument("--stats", action="store_true", help="print statistics as JSON")
    args = parser.parse_args(argv)

    config = SMALL if args.small else default
    overrides = {
        "n_sparse": args.n_sparse,
        "n_dense": args.n_dense,
        "n_changed": args.n_changed,
        "test_per_domain": args.test_per_domain,
        "noise": args.noise,
    }
    values = {**config.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
    for key in ("n_sparse", "n_dense", "n_changed"):
        if values[key] < 0:
            parser.error(f"--{key.replace('_', '-')} must be >= 0")
    if values["test_per_domain"] < 1:
        parser.error("--test-per-domain must be >= 1")
    if not 0.0 <= values["noise"] < 1.0:
        parser.error("--noise must be within [0, 1)")
    config = Config(**values)

    records = generate(args.seed, config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(dumps(record) + "\n")
    summary = statistics(records)
    if args.stats:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"wrote {summary['records']} records of {summary['users']} users to {args.out} "
            f"({summary['records_by_split']})",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
