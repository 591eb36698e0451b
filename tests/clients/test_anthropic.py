"""The official `anthropic` client against a live `hearth serve`: messages,
streaming, tool use, token counting and bad input. Run by
crates/hearth/tests/clients.rs with HEARTH_BASE set to the server's address."""

import json
import os
import unittest

import anthropic
import jsonschema

from schemas import FUNCTIONS, SCHEMAS, TIME

TOOLS = [{"name": name, "description": d, "input_schema": schema} for name, (d, schema) in FUNCTIONS.items()]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
# Current SDKs no longer name `temperature`; older clients send it, and
# Hearth honours it (0 to 1), so tests that compare two replies send it raw.
GREEDY = {"temperature": 0}
TRIAGE = {
    "type": "object",
    "properties": {
        "severity": {"enum": ["low", "medium", "high"]},
        "ward": {"type": "string", "maxLength": 20},
        "admit": {"type": "boolean"},
        "notes": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 2},
    },
    "required": ["severity", "ward", "admit", "notes"],
    "additionalProperties": False,
}


def client():
    return anthropic.Anthropic(base_url=os.environ["HEARTH_BASE"], api_key="unused", max_retries=0)


def model():
    return os.environ.get("HEARTH_MODEL", "smollm2")


class Messages(unittest.TestCase):
    def setUp(self):
        self.client = client()

    def test_create_answers_with_a_text_block_and_usage(self):
        m = self.client.messages.create(
            model=model(), max_tokens=24, extra_body=GREEDY,
            system="You are terse.", messages=[{"role": "user", "content": "Name a colour."}])
        self.assertEqual(m.type, "message")
        self.assertEqual(m.role, "assistant")
        self.assertTrue(m.id.startswith("msg_"))
        self.assertEqual(m.content[0].type, "text")
        self.assertTrue(m.content[0].text.strip())
        self.assertIn(m.stop_reason, ("end_turn", "max_tokens"))
        self.assertGreater(m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0), 5)
        self.assertGreater(m.usage.output_tokens, 0)
        self.assertLessEqual(m.usage.output_tokens, 24)

    def test_max_tokens_ends_with_max_tokens(self):
        m = self.client.messages.create(
            model=model(), max_tokens=3, extra_body=GREEDY,
            messages=[{"role": "user", "content": "Write a long story about a lighthouse."}])
        self.assertEqual(m.stop_reason, "max_tokens")
        self.assertEqual(m.usage.output_tokens, 3)

    def test_stream_events_add_up_to_the_final_message(self):
        with self.client.messages.stream(
                model=model(), max_tokens=40, extra_body=GREEDY,
                messages=[{"role": "user", "content": "Describe the sea in two sentences."}]) as stream:
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
        self.assertGreater(len(pieces), 1)
        self.assertEqual("".join(pieces), final.content[0].text)
        self.assertIn(final.stop_reason, ("end_turn", "max_tokens"))
        self.assertGreater(final.usage.output_tokens, 1)
        self.assertLessEqual(final.usage.output_tokens, 40)
        self.assertGreater(final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0), 5)

    def test_raw_stream_has_anthropics_event_order(self):
        stream = self.client.messages.create(
            model=model(), max_tokens=8, extra_body=GREEDY, stream=True,
            messages=[{"role": "user", "content": "Say hello."}])
        kinds = [event.type for event in stream if event.type != "ping"]
        self.assertEqual(kinds[0], "message_start")
        self.assertEqual(kinds[-2:], ["message_delta", "message_stop"])
        self.assertEqual(kinds[1], "content_block_start")
        self.assertEqual(kinds[-3], "content_block_stop")
        self.assertTrue(all(k == "content_block_delta" for k in kinds[2:-3]), kinds)

    def test_stop_sequences_are_named(self):
        # Any list of five fruits has a line break or a comma before 40 tokens.
        stops = ["@@@", "\n", ","]
        kwargs = dict(model=model(), max_tokens=40, extra_body=GREEDY, stop_sequences=stops,
                      messages=[{"role": "user", "content": "List five fruits."}])
        whole = self.client.messages.create(**kwargs)
        with self.client.messages.stream(**kwargs) as stream:
            streamed = stream.get_final_message()
        for m in (whole, streamed):
            self.assertEqual(m.stop_reason, "stop_sequence", m)
            self.assertIn(m.stop_sequence, stops[1:])
            text = "".join(b.text for b in m.content)
            self.assertFalse(any(stop in text for stop in stops), text)


class ToolUse(unittest.TestCase):
    def setUp(self):
        self.client = client()

    def test_any_forces_a_valid_call_and_the_round_trip_answers(self):
        m = self.client.messages.create(
            model=model(), max_tokens=80, messages=QUESTION, tools=TOOLS,
            tool_choice={"type": "any", "disable_parallel_tool_use": True}, extra_body={"seed": 1})
        self.assertEqual(m.stop_reason, "tool_use")
        uses = [b for b in m.content if b.type == "tool_use"]
        self.assertEqual(len(uses), 1)
        jsonschema.validate(uses[0].input, SCHEMAS[uses[0].name])
        answer = self.client.messages.create(
            model=model(), max_tokens=40, extra_body=GREEDY, tools=TOOLS, tool_choice={"type": "none"},
            messages=QUESTION + [
                {"role": "assistant", "content": [b.model_dump() for b in m.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                              "content": json.dumps({"temperature": 21, "sky": "clear"})}]},
            ])
        self.assertIn(answer.stop_reason, ("end_turn", "max_tokens"))
        self.assertFalse([b for b in answer.content if b.type == "tool_use"])
        self.assertTrue(answer.content[0].text.strip())

    def test_a_named_tool_streams_as_a_tool_use_block(self):
        with self.client.messages.stream(
                model=model(), max_tokens=80, messages=QUESTION, tools=TOOLS,
                tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
                extra_body={"seed": 5}) as stream:
            final = stream.get_final_message()
        self.assertEqual(final.stop_reason, "tool_use")
        uses = [b for b in final.content if b.type == "tool_use"]
        self.assertEqual([u.name for u in uses], ["get_time"])
        jsonschema.validate(uses[0].input, TIME)


class StructuredOutput(unittest.TestCase):
    def test_output_config_schema_holds_for_10_seeds(self):
        c = client()
        for seed in range(10):
            with self.subTest(seed=seed):
                m = c.messages.create(
                    model=model(), max_tokens=150,
                    messages=[{"role": "user", "content": "Triage a patient with a broken arm, as JSON."}],
                    output_config={"format": {"type": "json_schema", "schema": TRIAGE}},
                    extra_body={"seed": seed, "temperature": 1.0})
                self.assertEqual(m.stop_reason, "end_turn", m.content)
                jsonschema.validate(json.loads(m.content[0].text), TRIAGE)


class CountTokens(unittest.TestCase):
    def setUp(self):
        self.client = client()

    def test_counts_match_what_a_message_is_charged(self):
        kwargs = dict(model=model(), system="Be brief.", messages=QUESTION, tools=TOOLS)
        counted = self.client.messages.count_tokens(**kwargs).input_tokens
        m = self.client.messages.create(max_tokens=1, **kwargs)
        self.assertEqual(counted, m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0))
        without_tools = self.client.messages.count_tokens(model=model(), system="Be brief.", messages=QUESTION)
        self.assertLess(without_tools.input_tokens, counted)


class BadInput(unittest.TestCase):
    def setUp(self):
        self.client = client()

    def refused(self, error=anthropic.BadRequestError, **kwargs):
        kwargs.setdefault("model", model())
        kwargs.setdefault("max_tokens", 5)
        with self.assertRaises(error) as caught:
            self.client.messages.create(**kwargs)
        body = caught.exception.body
        self.assertEqual(body["type"], "error", body)
        self.assertTrue(body["error"]["message"], body)
        return body["error"]

    def test_each_is_a_4xx_in_anthropic_shape_and_the_server_stays_healthy(self):
        invalid = "invalid_request_error"
        self.assertEqual(self.refused(messages=[{"role": "system", "content": "x"}, *QUESTION])["type"], invalid)
        self.assertEqual(self.refused(messages=[{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_x", "content": "42"}]}])["type"], invalid)
        self.assertIn("image", self.refused(messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}])["message"])
        self.refused(messages=QUESTION, tools=TOOLS, tool_choice={"type": "tool", "name": "nope"})
        self.refused(messages=QUESTION, tools=[{"name": "f", "input_schema": {
            "type": "object", "properties": {"x": {"type": "strin"}}}}], tool_choice={"type": "any"})
        self.refused(messages=QUESTION, extra_body={"temperature": 1.5})
        self.refused(messages=QUESTION, max_tokens=0)
        self.refused(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure"}])
        self.assertEqual(self.refused(anthropic.NotFoundError, model="no-such-model", messages=QUESTION)["type"],
                         "not_found_error")
        ok = self.client.messages.create(model=model(), max_tokens=3, messages=QUESTION)
        self.assertEqual(ok.type, "message")


if __name__ == "__main__":
    unittest.main(verbosity=2)
