"""Tool parameter schemas both client suites offer the model, with the
description each tool has; every API family wraps them in its own shape."""

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 24}},
    "required": ["zone"],
}
# name -> (description, parameter schema)
FUNCTIONS = {
    "get_weather": ("Current weather in a city", WEATHER),
    "get_time": ("Current time in a time zone", TIME),
}
SCHEMAS = {name: schema for name, (_, schema) in FUNCTIONS.items()}
