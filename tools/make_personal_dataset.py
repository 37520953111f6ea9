"""Generates a seeded, personalized web-API tool-calling dataset (JSON Lines).

Simulated users hold latent preferences over tools and argument values in the domains of one
domain set. The default set, ``webapi``, has seven domains: shopping (PersonalWAB-style search /
recommend / review), music, maps, weather, news, messaging and food delivery. Every request is
ambiguous without the user's history: "Get me to City Airport from Oak Street Office." is a
transit-directions call for one user and a ride request for another; "What's the weather in Oslo
tomorrow?" needs the user's units.

The ``lifestyle`` set has seven other domains, with tools and enum values of their own: calendar
(Google Calendar or Outlook, reminder), travel (flights or trains, cabin or seat class), fitness
(run, bike ride or swim, kilometers or miles), video streaming (service, playback quality), smart
home (light scene, climate mode), payments (Venmo, PayPal or bank transfer, currency) and to-do
tasks (Todoist or TickTick, priority). A dataset drawn from it, with another seed, checks that
results carry over to domains and tools the first dataset does not have.

Users come in three kinds:

* ``sparse``: 1-3 past turns per domain;
* ``dense``: 20+ past turns in one or two domains (and a sparse one);
* ``changed``: in one or two domains the preference changed: older history prefers X, recent
  history and the test turns prefer Y.

Each record has the ``chosen`` call, ``rejected`` calls (other tools or other preference values
for the same request, serialized like ``chosen``), ``graded_args`` (arguments copied from the
request or fixed by a preference) and a ``meta`` dict (domain, user kind, preference phase,
request family, which graded arguments are copied and which are preferences).

Usage (``--out`` defaults to ``examples/data/personal_<domain set>.jsonl``)::

    python tools/make_personal_dataset.py --seed 0 --out examples/data/personal_webapi.jsonl
    python tools/make_personal_dataset.py --domain-set lifestyle --seed 1
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
"""The domains of the default (``webapi``) set."""
LIFESTYLE_DOMAINS = (
    "calendar",
    "travel",
    "fitness",
    "streaming",
    "smart_home",
    "payments",
    "tasks",
)
"""The domains of the ``lifestyle`` set: other domains, other tools."""
DOMAIN_SETS: dict[str, tuple[str, ...]] = {"webapi": DOMAINS, "lifestyle": LIFESTYLE_DOMAINS}
"""Named domain sets; a dataset's users draw their domains from one set."""
DEFAULT_DOMAIN_SET = "webapi"


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

# The lifestyle domain set: its tool names and enum values appear nowhere in the webapi set.
CALENDAR_REMINDERS = [
    "no_reminder",
    "10_minutes_before",
    "30_minutes_before",
    "1_hour_before",
    "1_day_before",
]
CALENDAR_TOOLS = ["google_calendar_create_event", "outlook_create_event"]
CALENDAR_ACCOUNTS = ["google_calendar", "outlook_calendar"]
FLIGHT_CABINS = ["economy_class", "premium_economy_class", "business_class"]
TRAIN_CLASSES = ["standard_class", "first_class"]
COMFORT_LEVELS = ["budget", "plus", "premium"]
DISTANCE_UNITS = ["kilometers", "miles"]
SWIM_STROKES = ["freestyle", "breaststroke", "backstroke", "medley"]
VIDEO_SERVICES = ["netflix_watch", "prime_video_watch", "disney_plus_watch"]
VIDEO_QUALITIES = ["data_saver_480p", "hd_720p", "full_hd_1080p", "ultra_hd_4k"]
LIGHT_SCENES = ["warm_white", "cool_daylight", "dim_amber", "bright_focus"]
CLIMATE_MODES = ["eco_mode", "comfort_mode", "boost_mode"]
PAYMENT_APPS = ["venmo_pay", "paypal_send", "bank_transfer"]
CURRENCIES = ["USD", "EUR", "GBP", "CHF"]
TASK_APPS = ["todoist_add_task", "ticktick_add_task"]
TASK_PRIORITIES = ["priority_1", "priority_2", "priority_3", "priority_4"]

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
    "calendar": [
        _tool(
            "google_calendar_create_event",
            "Create an event in Google Calendar.",
            {
                "title": {"type": "string", "description": "Event title."},
                "day": {"type": "string", "description": "Day of the event."},
                "time": {"type": "string", "description": "Start time."},
                "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 720},
                "reminder": {
                    "type": "string",
                    "enum": CALENDAR_REMINDERS,
                    "description": "When to be reminded.",
                },
            },
            ["title", "day", "time"],
        ),
        _tool(
            "outlook_create_event",
            "Create an event in the Outlook calendar.",
            {
                "subject": {"type": "string", "description": "Event subject."},
                "day": {"type": "string", "description": "Day of the event."},
                "start_time": {"type": "string", "description": "Start time."},
                "reminder": {
                    "type": "string",
                    "enum": CALENDAR_REMINDERS,
                    "description": "When to be reminded.",
                },
                "show_as": {"type": "string", "enum": ["busy", "free", "tentative"]},
            },
            ["subject", "day", "start_time"],
        ),
        _tool(
            "list_calendar_events",
            "List the events of one day in one calendar account.",
            {
                "day": {"type": "string", "description": "The day to list."},
                "calendar": {
                    "type": "string",
                    "enum": CALENDAR_ACCOUNTS,
                    "description": "Calendar account.",
                },
            },
            ["day", "calendar"],
        ),
    ],
    "travel": [
        _tool(
            "search_flights",
            "Search flights between two cities on a date.",
            {
                "origin": {"type": "string", "description": "Departure city."},
                "destination": {"type": "string", "description": "Arrival city."},
                "date": {"type": "string", "description": "Travel date."},
                "cabin": {"type": "string", "enum": FLIGHT_CABINS, "description": "Cabin."},
                "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
            },
            ["origin", "destination", "date", "cabin"],
        ),
        _tool(
            "search_trains",
            "Search train connections between two cities on a date.",
            {
                "from_city": {"type": "string", "description": "Departure city."},
                "to_city": {"type": "string", "description": "Arrival city."},
                "date": {"type": "string", "description": "Travel date."},
                "seat_class": {
                    "type": "string",
                    "enum": TRAIN_CLASSES,
                    "description": "Seat class.",
                },
                "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
            },
            ["from_city", "to_city", "date", "seat_class"],
        ),
    ],
    "fitness": [
        _tool(
            "log_run",
            "Log a run in the training log.",
            {
                "duration_minutes": {"type": "integer", "minimum": 1, "maximum": 600},
                "distance": {"type": "number", "exclusiveMinimum": 0},
                "unit": {
                    "type": "string",
                    "enum": DISTANCE_UNITS,
                    "description": "Unit of the distance.",
                },
            },
            ["duration_minutes"],
        ),
        _tool(
            "log_bike_ride",
            "Log a bike ride in the training log.",
            {
                "duration_minutes": {"type": "integer", "minimum": 1, "maximum": 900},
                "distance": {"type": "number", "exclusiveMinimum": 0},
                "unit": {
                    "type": "string",
                    "enum": DISTANCE_UNITS,
                    "description": "Unit of the distance.",
                },
            },
            ["duration_minutes"],
        ),
        _tool(
            "log_swim",
            "Log a swim in the training log.",
            {
                "duration_minutes": {"type": "integer", "minimum": 1, "maximum": 300},
                "laps": {"type": "integer", "minimum": 1},
                "stroke": {"type": "string", "enum": SWIM_STROKES},
            },
            ["duration_minutes"],
        ),
    ],
    "streaming": [
        _tool(
            "netflix_watch",
            "Start a show or movie on Netflix.",
            {
                "query": {"type": "string", "description": "Title, genre or actor."},
                "quality": {"type": "string", "enum": VIDEO_QUALITIES},
                "subtitles": {"type": "boolean", "description": "Show subtitles."},
            },
            ["query"],
        ),
        _tool(
            "prime_video_watch",
            "Start a show or movie on Prime Video.",
            {
                "query": {"type": "string", "description": "Title, genre or actor."},
                "quality": {"type": "string", "enum": VIDEO_QUALITIES},
            },
            ["query"],
        ),
        _tool(
            "disney_plus_watch",
            "Start a show or movie on Disney+.",
            {
                "query": {"type": "string", "description": "Title, genre or actor."},
                "quality": {"type": "string", "enum": VIDEO_QUALITIES},
                "kids_profile": {"type": "boolean", "description": "Use the kids profile."},
            },
            ["query"],
        ),
    ],
    "smart_home": [
        _tool(
            "set_lights",
            "Switch on the lights of a room with a lighting scene.",
            {
                "room": {"type": "string", "description": "Room name."},
                "scene": {"type": "string", "enum": LIGHT_SCENES, "description": "Light scene."},
                "brightness": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 100,
                    "description": "Brightness in percent.",
                },
            },
            ["room", "scene"],
        ),
        _tool(
            "set_thermostat",
            "Turn on the heating of a room in a climate mode.",
            {
                "room": {"type": "string", "description": "Room name."},
                "mode": {"type": "string", "enum": CLIMATE_MODES, "description": "Climate mode."},
                "target_degrees": {
                    "type": "number",
                    "minimum": 5,
                    "maximum": 30,
                    "description": "Target temperature in degrees.",
                },
            },
            ["room", "mode"],
        ),
    ],
    "payments": [
        _tool(
            "venmo_pay",
            "Send money to a friend on Venmo.",
            {
                "recipient": {"type": "string", "description": "Contact name."},
                "amount": {"type": "number", "exclusiveMinimum": 0},
                "currency": {"type": "string", "enum": CURRENCIES},
                "note": {"type": "string", "description": "What the payment is for."},
                "audience": {"type": "string", "enum": ["private", "friends", "public"]},
            },
            ["recipient", "amount", "currency"],
        ),
        _tool(
            "paypal_send",
            "Send money to a contact with PayPal.",
            {
                "recipient": {"type": "string", "description": "Contact name."},
                "amount": {"type": "number", "exclusiveMinimum": 0},
                "currency": {"type": "string", "enum": CURRENCIES},
                "note": {"type": "string", "description": "What the payment is for."},
            },
            ["recipient", "amount", "currency"],
        ),
        _tool(
            "bank_transfer",
            "Transfer money from the user's bank account to a payee.",
            {
                "payee": {"type": "string", "description": "Payee name."},
                "amount": {"type": "number", "exclusiveMinimum": 0},
                "currency": {"type": "string", "enum": CURRENCIES},
                "reference": {"type": "string", "description": "Payment reference."},
                "instant": {"type": "boolean", "description": "Instant transfer."},
            },
            ["payee", "amount", "currency"],
        ),
    ],
    "tasks": [
        _tool(
            "todoist_add_task",
            "Add a task to Todoist.",
            {
                "content": {"type": "string", "description": "What to do."},
                "due_string": {"type": "string", "description": "When it is due."},
                "priority": {"type": "string", "enum": TASK_PRIORITIES},
            },
            ["content"],
        ),
        _tool(
            "ticktick_add_task",
            "Add a task to TickTick.",
            {
                "title": {"type": "string", "description": "What to do."},
                "due": {"type": "string", "description": "When it is due."},
                "priority": {"type": "string", "enum": TASK_PRIORITIES},
                "list_name": {"type": "string", "description": "Task list."},
            },
            ["title"],
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

# The lifestyle set's vocabulary.

EVENTS = [
    "lunch with Sofia",
    "coffee with Marcus",
    "dinner with the Parkers",
    "yoga class",
    "team standup",
    "budget review",
    "piano lesson",
    "book club",
    "parent-teacher conference",
    "quarterly planning",
    "call with the landlord",
    "dentist checkup",
    "haircut with Jamie",
    "interview prep",
    "project kickoff",
    "football practice",
]
CALENDAR_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "tomorrow"]
CALENDAR_TIMES = [
    "8 am",
    "9:30 am",
    "10 am",
    "11:15 am",
    "12:30 pm",
    "1 pm",
    "2:45 pm",
    "4 pm",
    "5:30 pm",
    "7 pm",
]
EVENT_TEMPLATES = [
    "Put {event} on my calendar {when} at {time}.",
    "Add {event} to my calendar {when} at {time}.",
    "Schedule {event} in my calendar {when} at {time}.",
    "New calendar entry: {event} {when} at {time}.",
    "Please block my calendar {when} at {time} for {event}.",
]
AGENDA_TEMPLATES = [
    "What's on my calendar {when}?",
    "Check my calendar {when}.",
    "Do I have any meetings {when}? Look at my calendar.",
    "Read me my calendar {when}.",
    "Show my calendar events {when}.",
]

TRAVEL_CITIES = [
    "Lyon",
    "Milan",
    "Amsterdam",
    "Berlin",
    "Munich",
    "Zurich",
    "Brussels",
    "Barcelona",
    "Florence",
    "Hamburg",
    "Copenhagen",
    "Stockholm",
    "Edinburgh",
    "Manchester",
    "Rome",
    "Paris",
    "Frankfurt",
    "Geneva",
]
TRAVEL_DATES = [
    "March 3",
    "March 17",
    "April 8",
    "April 25",
    "May 9",
    "May 30",
    "June 12",
    "June 27",
    "July 15",
    "August 2",
    "September 19",
    "October 6",
]
TRIP_TEMPLATES = [
    "I need to travel from {origin} to {dest} on {date}, find me options.",
    "Find me a trip from {origin} to {dest} on {date}.",
    "Look up travel options from {origin} to {dest} on {date}.",
    "Plan my trip from {origin} to {dest} on {date}.",
    "I'm traveling from {origin} to {dest} on {date}. What can I book?",
]
GROUP_TRIP_TEMPLATES = [
    "Find a trip from {origin} to {dest} on {date} for {travelers} travelers.",
    "We are {travelers} people traveling from {origin} to {dest} on {date}, find options.",
    "Plan a trip for {travelers} travelers from {origin} to {dest} on {date}.",
]
FLIGHT_TEMPLATES = [
    "Find me a flight from {origin} to {dest} on {date}.",
    "Search flights from {origin} to {dest} for {date}.",
    "I want to fly from {origin} to {dest} on {date}, check the flights.",
]
CABIN_BY_COMFORT = {
    "budget": "economy_class",
    "plus": "premium_economy_class",
    "premium": "business_class",
}
SEAT_BY_COMFORT = {"budget": "standard_class", "plus": "standard_class", "premium": "first_class"}

WORKOUT_MINUTES = [20, 25, 30, 35, 40, 45, 50, 60, 75, 90]
WORKOUT_TEMPLATES = [
    "Log my {minutes}-minute workout from this morning.",
    "Add today's workout to my training log: {minutes} minutes.",
    "I worked out for {minutes} minutes today, log it in my training log.",
    "Record a {minutes}-minute workout in my training log.",
    "Log a workout for me, {minutes} minutes this evening.",
]
RUN_DISTANCES: list[float] = [3, 5, 6.5, 8, 10, 12.5, 15, 21.1]
RUN_TEMPLATES = [
    "Log my run: {distance} in {minutes} minutes.",
    "I ran {distance} in {minutes} minutes this morning, add it to my training log.",
    "Add a {distance} run to my training log, {minutes} minutes.",
    "Just finished a {distance} run in {minutes} minutes. Log it.",
]
RIDE_DISTANCES: list[float] = [15, 20, 25, 32, 40, 55, 64, 80]
RIDE_TEMPLATES = [
    "Log my bike ride: {distance} in {minutes} minutes.",
    "I rode my bike {distance} in {minutes} minutes today, add it to my training log.",
    "Add a {distance} bike ride to my training log, {minutes} minutes.",
]

SHOWS = [
    "Stranger Things",
    "The Crown",
    "Planet Earth",
    "The Mandalorian",
    "Bluey",
    "Squid Game",
    "Breaking Bad",
    "Frozen",
    "The Boys",
    "Ted Lasso",
    "Our Planet",
    "The Last of Us",
    "Succession",
    "Dune",
]
SHOW_TEMPLATES = [
    "I want to watch {show} tonight.",
    "Put on {show}, I want to watch it on the TV.",
    "Let's watch {show} on the TV.",
    "Stream {show} on the TV, please.",
    "Time to watch {show}. Start it on the TV.",
]
VIDEO_GENRES = [
    "documentary",
    "comedy special",
    "thriller",
    "cartoon",
    "cooking show",
    "sci-fi movie",
    "romantic comedy",
    "nature series",
    "horror movie",
    "crime drama",
]
GENRE_WATCH_TEMPLATES = [
    "I want to watch a {genre} tonight, put one on the TV.",
    "Find me a {genre} to watch on the TV.",
    "Put on a {genre}, I feel like watching something.",
    "Stream a good {genre} on the TV.",
]

ROOMS = [
    "living room",
    "bedroom",
    "kitchen",
    "study",
    "bathroom",
    "nursery",
    "guest room",
    "hallway",
    "dining room",
    "basement",
]
LIGHTS_TEMPLATES = [
    "Turn on the lights in the {room}.",
    "Lights on in the {room}, please.",
    "It's too dark in the {room}, switch the lights on.",
    "Switch on the {room} lights.",
    "Can you put the lights on in the {room}?",
]
BRIGHTNESS_TEMPLATES = [
    "Set the {room} lights to {level} percent.",
    "Turn the lights in the {room} to {level} percent.",
    "Put the {room} lights on at {level} percent brightness.",
]
HEATING_TEMPLATES = [
    "It's cold in the {room}, turn up the heating.",
    "Turn on the heating in the {room}.",
    "Warm up the {room}, the heating should come on.",
    "The {room} is freezing, put the heating on.",
]
THERMOSTAT_TEMPLATES = [
    "Set the {room} thermostat to {degrees} degrees.",
    "Heat the {room} to {degrees} degrees on the thermostat.",
    "Thermostat in the {room}: {degrees} degrees, please.",
]

PAYEES = [
    "Sofia",
    "Jonas",
    "Amara",
    "Ravi",
    "Elena",
    "Noah",
    "Yuki",
    "Carlos",
    "Zoe",
    "Omar",
    "Lena",
    "Theo",
    "Nadia",
    "Felix",
]
AMOUNTS = [12, 15, 18, 20, 25, 30, 35, 40, 45, 60, 75, 80, 120, 150]
PAYMENT_REASONS = [
    "the concert tickets",
    "last night's dinner",
    "the taxi",
    "the groceries",
    "the birthday gift",
    "the cabin rental",
    "the ski passes",
    "the pizza",
    "the team lunch",
    "the wedding present",
    "the festival tickets",
    "the electricity bill",
    "the game night snacks",
    "the museum tickets",
]
PAY_TEMPLATES = [
    "Pay {name} back {amount} for {reason}.",
    "Send {name} {amount} for {reason}.",
    "I owe {name} {amount} for {reason}, send the money.",
    "Transfer {amount} to {name} for {reason}.",
    "Send money to {name}: {amount} for {reason}.",
]
BANK_TEMPLATES = [
    "Make a bank transfer of {amount} to {name} for {reason}.",
    "Wire {amount} to {name} from my bank account for {reason}.",
    "Send {amount} to {name} by bank transfer for {reason}.",
]

TASKS = [
    "renew my passport",
    "call the plumber",
    "water the plants",
    "return the library books",
    "buy a birthday card",
    "submit the expense report",
    "clean the gutters",
    "back up my laptop",
    "cancel the gym trial",
    "order new contact lenses",
    "fix the squeaky door",
    "pick up the dry cleaning",
    "book the car inspection",
    "send the thank-you notes",
]
TASK_DUES = ["today", "tomorrow", "Monday", "Wednesday", "Friday", "the weekend", "next week"]
DUE_TASK_TEMPLATES = [
    "Add a task to {task} by {due}.",
    "Put a task on my to-do list to {task} by {due}.",
    "New task: {task}, due {due}.",
    "I have to {task} by {due}, add it to my tasks.",
    "Add to my to-do list: {task} by {due}.",
]
TASK_TEMPLATES = [
    "Add a task to {task}.",
    "New task for my to-do list: {task}.",
    "I need to {task}, add it to my to-do list.",
    "Add a to-do to {task}.",
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


def _calendar_request(rng: random.Random, vocab: Vocab) -> Request:
    day = rng.choice(CALENDAR_DAYS)
    when = day if day == "tomorrow" else f"on {day}"
    if rng.random() < 0.65:
        event = rng.choice(EVENTS)
        time = rng.choice(CALENDAR_TIMES)
        text = rng.choice(EVENT_TEMPLATES).format(event=event, when=when, time=time)

        def build_event(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            tool = pref["calendar"]
            if tool == "google_calendar_create_event":
                args = {"title": event, "day": day, "time": time, "reminder": pref["reminder"]}
                return _call(tool, args), ["title", "day", "time"], ["reminder"]
            args = {"subject": event, "day": day, "start_time": time, "reminder": pref["reminder"]}
            return _call(tool, args), ["subject", "day", "start_time"], ["reminder"]

        return Request("add_event", text, {"event": event, "day": day, "time": time}, build_event)
    text = rng.choice(AGENDA_TEMPLATES).format(when=when)

    def build_agenda(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        account = CALENDAR_ACCOUNTS[CALENDAR_TOOLS.index(pref["calendar"])]
        call = _call("list_calendar_events", {"day": day, "calendar": account})
        return call, ["day"], ["calendar"]

    return Request("agenda", text, {"day": day}, build_agenda)


def _trip_call(
    tool: str, comfort: str, origin: str, dest: str, date: str, travelers: int | None
) -> tuple[JSON, list[str], list[str]]:
    if tool == "search_flights":
        args: JSON = {"origin": origin, "destination": dest, "date": date}
        copied, prefs = ["origin", "destination", "date"], ["cabin"]
        args["cabin"] = CABIN_BY_COMFORT[comfort]
    else:
        args = {"from_city": origin, "to_city": dest, "date": date}
        copied, prefs = ["from_city", "to_city", "date"], ["seat_class"]
        args["seat_class"] = SEAT_BY_COMFORT[comfort]
    if travelers is not None:
        args["passengers"] = travelers
        copied.append("passengers")
    return _call(tool, args), copied, prefs


def _travel_request(rng: random.Random, vocab: Vocab) -> Request:
    origin, dest = rng.sample(TRAVEL_CITIES, 2)
    date = rng.choice(TRAVEL_DATES)
    slots: dict[str, Any] = {"origin": origin, "destination": dest, "date": date}
    roll = rng.random()
    if roll < 0.5:
        text = rng.choice(TRIP_TEMPLATES).format(origin=origin, dest=dest, date=date)

        def build_trip(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            return _trip_call(pref["mode"], pref["comfort"], origin, dest, date, None)

        return Request("trip", text, slots, build_trip)
    if roll < 0.75:
        travelers = rng.randint(2, 5)
        text = rng.choice(GROUP_TRIP_TEMPLATES).format(
            origin=origin, dest=dest, date=date, travelers=travelers
        )

        def build_group(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            return _trip_call(pref["mode"], pref["comfort"], origin, dest, date, travelers)

        return Request("group_trip", text, {**slots, "travelers": travelers}, build_group)
    text = rng.choice(FLIGHT_TEMPLATES).format(origin=origin, dest=dest, date=date)

    def build_flight(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        return _trip_call("search_flights", pref["comfort"], origin, dest, date, None)

    return Request("flight", text, slots, build_flight)


def _fitness_request(rng: random.Random, vocab: Vocab) -> Request:
    minutes = rng.choice(WORKOUT_MINUTES)
    roll = rng.random()
    if roll < 0.4:
        text = rng.choice(WORKOUT_TEMPLATES).format(minutes=minutes)

        def build_workout(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            return _call(pref["workout"], {"duration_minutes": minutes}), ["duration_minutes"], []

        return Request("workout", text, {"minutes": minutes}, build_workout)
    if roll < 0.7:
        family, tool, distances, templates = "run", "log_run", RUN_DISTANCES, RUN_TEMPLATES
    else:
        family, tool = "bike_ride", "log_bike_ride"
        distances, templates = RIDE_DISTANCES, RIDE_TEMPLATES
    distance = rng.choice(distances)
    text = rng.choice(templates).format(distance=distance, minutes=minutes)

    def build_distance(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        args = {"duration_minutes": minutes, "distance": distance, "unit": pref["unit"]}
        return _call(tool, args), ["duration_minutes", "distance"], ["unit"]

    return Request(family, text, {"minutes": minutes, "distance": distance}, build_distance)


def _streaming_request(rng: random.Random, vocab: Vocab) -> Request:
    if rng.random() < 0.6:
        family, query = "watch_title", rng.choice(SHOWS)
        text = rng.choice(SHOW_TEMPLATES).format(show=query)
    else:
        family, query = "watch_genre", rng.choice(VIDEO_GENRES)
        text = rng.choice(GENRE_WATCH_TEMPLATES).format(genre=query)

    def build(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        call = _call(pref["service"], {"query": query, "quality": pref["quality"]})
        return call, ["query"], ["quality"]

    return Request(family, text, {"query": query}, build)


def _smart_home_request(rng: random.Random, vocab: Vocab) -> Request:
    room = rng.choice(ROOMS)
    roll = rng.random()
    if roll < 0.35:
        text = rng.choice(LIGHTS_TEMPLATES).format(room=room)

        def build_lights(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            return _call("set_lights", {"room": room, "scene": pref["scene"]}), ["room"], ["scene"]

        return Request("lights_on", text, {"room": room}, build_lights)
    if roll < 0.5:
        level = rng.choice([20, 30, 40, 50, 60, 75, 80])
        text = rng.choice(BRIGHTNESS_TEMPLATES).format(room=room, level=level)

        def build_level(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            args = {"room": room, "scene": pref["scene"], "brightness": level}
            return _call("set_lights", args), ["room", "brightness"], ["scene"]

        return Request("lights_level", text, {"room": room, "level": level}, build_level)
    if roll < 0.8:
        text = rng.choice(HEATING_TEMPLATES).format(room=room)

        def build_heat(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            call = _call("set_thermostat", {"room": room, "mode": pref["climate"]})
            return call, ["room"], ["mode"]

        return Request("heating", text, {"room": room}, build_heat)
    degrees = rng.randint(18, 24)
    text = rng.choice(THERMOSTAT_TEMPLATES).format(room=room, degrees=degrees)

    def build_degrees(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        args = {"room": room, "mode": pref["climate"], "target_degrees": degrees}
        return _call("set_thermostat", args), ["room", "target_degrees"], ["mode"]

    return Request("thermostat", text, {"room": room, "degrees": degrees}, build_degrees)


def _payment_call(
    tool: str, currency: str, name: str, amount: int, reason: str
) -> tuple[JSON, list[str], list[str]]:
    if tool == "bank_transfer":
        args = {"payee": name, "amount": amount, "currency": currency, "reference": reason}
        return _call(tool, args), ["payee", "amount", "reference"], ["currency"]
    args = {"recipient": name, "amount": amount, "currency": currency, "note": reason}
    return _call(tool, args), ["recipient", "amount", "note"], ["currency"]


def _payments_request(rng: random.Random, vocab: Vocab) -> Request:
    name = rng.choice(PAYEES)
    amount = rng.choice(AMOUNTS)
    reason = rng.choice(PAYMENT_REASONS)
    slots = {"name": name, "amount": amount, "reason": reason}
    if rng.random() < 0.7:
        text = rng.choice(PAY_TEMPLATES).format(name=name, amount=amount, reason=reason)

        def build_pay(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
            return _payment_call(pref["app"], pref["currency"], name, amount, reason)

        return Request("pay", text, slots, build_pay)
    text = rng.choice(BANK_TEMPLATES).format(name=name, amount=amount, reason=reason)

    def build_bank(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        return _payment_call("bank_transfer", pref["currency"], name, amount, reason)

    return Request("wire", text, slots, build_bank)


def _tasks_request(rng: random.Random, vocab: Vocab) -> Request:
    task = rng.choice(TASKS)
    due: str | None = None
    if rng.random() < 0.6:
        due = rng.choice(TASK_DUES)
        text = rng.choice(DUE_TASK_TEMPLATES).format(task=task, due=due)
    else:
        text = rng.choice(TASK_TEMPLATES).format(task=task)

    def build(pref: dict[str, str]) -> tuple[JSON, list[str], list[str]]:
        tool = pref["app"]
        if tool == "todoist_add_task":
            text_arg, due_arg = "content", "due_string"
        else:
            text_arg, due_arg = "title", "due"
        args: JSON = {text_arg: task}
        copied = [text_arg]
        if due is not None:
            args[due_arg] = due
            copied.append(due_arg)
        args["priority"] = pref["priority"]
        return _call(tool, args), copied, ["priority"]

    family = "task" if due is None else "task_due"
    return Request(family, text, {"task": task, "due": due}, build)


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
    "calendar": _calendar_request,
    "travel": _travel_request,
    "fitness": _fitness_request,
    "streaming": _streaming_request,
    "smart_home": _smart_home_request,
    "payments": _payments_request,
    "tasks": _tasks_request,
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
    "calendar": {"calendar": CALENDAR_TOOLS, "reminder": CALENDAR_REMINDERS},
    "travel": {"mode": ["search_flights", "search_trains"], "comfort": COMFORT_LEVELS},
    "fitness": {"workout": ["log_run", "log_bike_ride", "log_swim"], "unit": DISTANCE_UNITS},
    "streaming": {"service": VIDEO_SERVICES, "quality": VIDEO_QUALITIES},
    "smart_home": {"scene": LIGHT_SCENES, "climate": CLIMATE_MODES},
    "payments": {"app": PAYMENT_APPS, "currency": CURRENCIES},
    "tasks": {"app": TASK_APPS, "priority": TASK_PRIORITIES},
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
    "calendar": "calendar",
    "travel": "mode",
    "fitness": "unit",
    "streaming": "service",
    "smart_home": "scene",
    "payments": "app",
    "tasks": "priority",
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


def _pick_domains(
    rng: random.Random, count: int, usage: Counter[str], domains: Sequence[str]
) -> list[str]:
    """Picks ``count`` of ``domains``, favoring the least used ones so far (balanced coverage)."""
    order = sorted(domains, key=lambda d: (usage[d], rng.random()))
    chosen = order[:count]
    usage.update(chosen)
    return chosen


def plan_users(
    config: Config, rng: random.Random, domains: Sequence[str] = DOMAINS
) -> list[UserPlan]:
    """Draws the simulated users and how each uses each of their domains.

    Args:
        config: Dataset sizes.
        rng: The seeded random generator.
        domains: The domains users draw theirs from (default: the ``webapi`` set).

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
            for domain in _pick_domains(rng, rng.randint(*config.sparse_domains), usage, domains):
                n_history = rng.randint(*config.sparse_history)
                plan = DomainPlan(
                    domain, _random_preference(rng, domain), n_history, config.test_per_domain
                )
                user.domains.append(plan)
        elif kind == "dense":
            count = config.dense_domains + config.dense_extra_domains
            for position, domain in enumerate(_pick_domains(rng, count, usage, domains)):
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
                _pick_domains(rng, n_changed + config.changed_extra_domains, usage, domains)
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


def generate(
    seed: int = 0, config: Config | None = None, domain_set: str = DEFAULT_DOMAIN_SET
) -> list[JSON]:
    """Generates the dataset as a list of record dicts.

    Args:
        seed: Seed of the random generator; the same seed gives the same records.
        config: Dataset sizes (default :class:`Config`).
        domain_set: Name of the domain set in :data:`DOMAIN_SETS` (default ``"webapi"``).

    Returns:
        The records, grouped by user, each user's records in turn order.

    Raises:
        ValueError: ``domain_set`` is not a known set.
    """
    if domain_set not in DOMAIN_SETS:
        raise ValueError(f"unknown domain set {domain_set!r} (known: {', '.join(DOMAIN_SETS)})")
    domains = DOMAIN_SETS[domain_set]
    config = config or Config()
    rng = random.Random(seed)
    # Product ASINs are drawn only for a set with the shopping domain.
    vocab = make_vocab(rng) if "shopping" in domains else Vocab({})
    records: list[JSON] = []
    for user in plan_users(config, rng, domains):
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
        "--domain-set",
        choices=sorted(DOMAIN_SETS),
        default=DEFAULT_DOMAIN_SET,
        help=f"which domains the users have (default {DEFAULT_DOMAIN_SET})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output .jsonl file (default examples/data/personal_<domain set>.jsonl)",
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

    records = generate(args.seed, config, args.domain_set)
    out: Path = args.out or Path(f"examples/data/personal_{args.domain_set}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(dumps(record) + "\n")
    summary = statistics(records)
    if args.stats:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"wrote {summary['records']} records of {summary['users']} users to {out} "
            f"({summary['records_by_split']})",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
