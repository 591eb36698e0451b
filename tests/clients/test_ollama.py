"""The official `ollama` client against a live `hearth serve`: listing,
showing, pulling with progress and deleting models, chat and generate
(streamed or not), embeddings, loaded models, and bad input. Run by
crates/hearth/tests/clients.rs with HEARTH_BASE set to the server's address
and HEARTH_MODEL to the served model's name; the server's store starts empty."""

import json
import os
import unittest

import jsonschema
import ollama

MODEL = os.environ["HEARTH_MODEL"]
# A catalog model the store does not hold yet: the pull is real.
CATALOG = "smollm2"


def client():
    return ollama.Client(host=os.environ["HEARTH_BASE"])


class Models(unittest.TestCase):
    def test_list_show_and_ps_describe_the_served_model(self):
        c = client()
        names = [m.model for m in c.list().models]
        self.assertIn(MODEL, names)
        shown = c.show(MODEL)
        self.assertEqual(shown.details.format, "gguf")
        self.assertEqual(shown.details.family, "llama")
        self.assertEqual(shown.details.quantization_level, "Q4_1")
        self.assertEqual(shown.details.parameter_size, "135M")
        self.assertIn("completion", shown.capabilities)
        self.assertEqual(shown.modelinfo["general.architecture"], "llama")
        running = [m.model for m in c.ps().models]
        self.assertEqual(running, [MODEL])

    def test_pull_streams_progress_then_delete_removes(self):
        c = client()
        events = list(c.pull(CATALOG, stream=True))
        self.assertEqual(events[0].status, "pulling manifest")
        self.assertEqual(events[-1].status, "success")
        progress = [e for e in events if e.total]
        self.assertGreater(len(progress), 10, [e.status for e in events])
        done = [e.completed for e in progress]
        self.assertEqual(done, sorted(done), "progress only grows")
        self.assertEqual(progress[-1].completed, progress[-1].total)
        self.assertGreater(progress[-1].total, 90_000_000)

        self.assertIn(CATALOG, [m.model for m in c.list().models])
        stored = c.show(CATALOG)
        self.assertEqual(stored.details.quantization_level, "Q4_1")
        # A second pull finds it stored and only confirms.
        self.assertEqual(c.pull(CATALOG).status, "success")

        self.assertEqual(c.delete(CATALOG).status, "success")
        self.assertNotIn(CATALOG, [m.model for m in c.list().models])
        with self.assertRaises(ollama.ResponseError) as gone:
            c.delete(CATALOG)
        self.assertEqual(gone.exception.status_code, 404)
        with self.assertRaises(ollama.ResponseError) as served:
            c.delete(MODEL)
        self.assertEqual(served.exception.status_code, 409)
        with self.assertRaises(ollama.ResponseError) as unknown:
            c.pull("no-such-model")
        self.assertEqual(unknown.exception.status_code, 404)


class Generation(unittest.TestCase):
    def test_chat_whole_and_streamed(self):
        c = client()
        messages = [{"role": "user", "content": "Name three colours."}]
        whole = c.chat(model=MODEL, messages=messages, options={"temperature": 0, "num_predict": 20})
        self.assertTrue(whole.done)
        self.assertEqual(whole.message.role, "assistant")
        self.assertTrue(whole.message.content.strip())
        self.assertGreater(whole.eval_count, 0)
        self.assertGreater(whole.prompt_eval_count, 5)
        parts = list(c.chat(model=MODEL, messages=messages, stream=True, options={"num_predict": 20}))
        self.assertTrue(parts[-1].done)
        self.assertIn(parts[-1].done_reason, ("stop", "length"))
        self.assertTrue(all(not p.done for p in parts[:-1]))
        self.assertTrue("".join(p.message.content for p in parts).strip())

    def test_chat_format_schema_validates(self):
        schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                    "age": {"type": "integer", "minimum": 0, "maximum": 120}},
                  "required": ["name", "age"], "additionalProperties": False}
        reply = client().chat(model=MODEL, format=schema, options={"seed": 1, "num_predict": 100},
                              messages=[{"role": "user", "content": "Describe a person as JSON."}])
        jsonschema.validate(json.loads(reply.message.content), schema)

    def test_generate_whole_streamed_and_bounded(self):
        c = client()
        whole = c.generate(model=MODEL, prompt="Say hello.", options={"num_predict": 4})
        self.assertTrue(whole.done)
        self.assertLessEqual(whole.eval_count, 4)
        self.assertTrue(whole.response)
        parts = list(c.generate(model=MODEL, prompt="Count to three.", stream=True, options={"num_predict": 10}))
        self.assertTrue(parts[-1].done)
        self.assertTrue("".join(p.response for p in parts))

    def test_embed_ranks_similar_texts_closer(self):
        reply = client().embed(model=MODEL, input=[
            "The doctor examined the patient's X-ray.", "A physician looked at the radiograph.",
            "The train to Berlin leaves at noon."])
        v = reply.embeddings
        dot = lambda a, b: sum(x * y for x, y in zip(a, b))
        self.assertEqual(len(v), 3)
        self.assertAlmostEqual(dot(v[0], v[0]), 1.0, places=3)
        self.assertGreater(dot(v[0], v[1]), dot(v[0], v[2]))


class BadInput(unittest.TestCase):
    def test_each_is_an_ollama_error_and_the_server_stays_healthy(self):
        c = client()
        user = [{"role": "user", "content": "hi"}]
        for kwargs, status in [
            (dict(model="nope", messages=user), 404),
            (dict(model=MODEL, messages=user, think=True), 400),
            (dict(model=MODEL, messages=user, options={"mirostat": 2}), 400),
            (dict(model=MODEL, messages=[{"role": "wizard", "content": "hi"}]), 400),
            (dict(model=MODEL, messages=user, keep_alive="soon"), 400),
        ]:
            with self.subTest(kwargs=kwargs):
                with self.assertRaises(ollama.ResponseError) as caught:
                    c.chat(**kwargs)
                self.assertEqual(caught.exception.status_code, status)
                self.assertTrue(caught.exception.error)
        ok = c.chat(model=MODEL, messages=user, options={"num_predict": 2})
        self.assertTrue(ok.done)


if __name__ == "__main__":
    unittest.main(verbosity=2)
