"""Judges recorded exchanges with the daemon against docs/openapi.json.

Usage: python3 check_exchanges.py OPENAPI_JSON < exchanges.json

Reads a JSON array of exchanges, each
{"method", "target", "status", "content_type", "allow", "body"} (body as
text; content_type and allow null when the response had none), and
writes a JSON array of verdicts, one per exchange, in order:
{"operation": "get /v1/tasks/{name}" or "unrouted", "error": null or why}.

An exchange agrees with the document when its method and path select an
operation that lists its status (a request outside every operation: a
status the root x-unrouted lists, and for 405 an Allow equal to the
path's x-allow), its content type is one the response documents, and its
body validates against that content's schema (application/x-ndjson: each
line). A response without content must have an empty body, as must every
answer to HEAD. Schemas are checked with openapi-schema-validator's
OpenAPI 3.1 validator, formats (date-time) included.

Run by tests/openapi.rs; scripts/test.sh installs openapi-spec-validator,
which brings openapi-schema-validator.
"""

import json
import re
import sys

import referencing
import referencing.jsonschema
from openapi_schema_validator import OAS31Validator

DOCUMENT_URI = "urn:sprite-tasks:openapi"
METHODS = ("get", "head", "post", "put", "delete")


def pointer_escape(token):
    return token.replace("~", "~0").replace("/", "~1")


def template_regex(template):
    """A path template as a regex: each {param} one path segment."""
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile(
        "^"
        + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        + "$"
    )


class Document:
    def __init__(self, document):
        self.document = document
        resource = referencing.Resource.from_contents(
            document, default_specification=referencing.jsonschema.DRAFT202012
        )
        self.registry = referencing.Registry().with_resource(DOCUMENT_URI, resource)
        self.templates = [
            (template, template_regex(template)) for template in document["paths"]
        ]

    def resolve(self, pointer):
        """The object at a JSON pointer ("/components/...") of the document."""
        node = self.document
        for token in pointer.lstrip("/").split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        return node

    def response(self, pointer):
        """The response object at pointer, through its $ref; its pointer."""
        node = self.resolve(pointer)
        while "$ref" in node:
            pointer = node["$ref"][1:]
            node = self.resolve(pointer)
        return node, pointer

    def validate(self, instance, schema_pointer):
        """The first schema violation of instance, or None."""
        schema = {"$ref": DOCUMENT_URI + "#" + schema_pointer}
        validator = OAS31Validator(
            schema,
            registry=self.registry,
            format_checker=OAS31Validator.FORMAT_CHECKER,
        )
        error = next(iter(validator.iter_errors(instance)), None)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(the body)"
        return f"{where}: {error.message}"

    def judge(self, exchange):
        """(operation, error or None) for one exchange."""
        method = exchange["method"].lower()
        path = exchange["target"].split("?", 1)[0].split("#", 1)[0]
        status = str(exchange["status"])
        template = next((t for t, regex in self.templates if regex.match(path)), None)
        item = self.document["paths"].get(template, {}) if template else {}
        if method in METHODS and method in item:
            operation = f"{method} {template}"
            pointer = f"/paths/{pointer_escape(template)}/{method}/responses"
            if status not in item[method]["responses"]:
                listed = ", ".join(item[method]["responses"])
                return operation, f"status {status} is not documented (documented: {listed})"
            error = self.judge_response(exchange, f"{pointer}/{status}")
            return operation, error
        unrouted = self.document["x-unrouted"]
        if status not in unrouted:
            return "unrouted", (
                f"status {status} is not one x-unrouted lists for {exchange['method']} {path}"
            )
        if status == "405":
            if template is None:
                return "unrouted", f"405 for {path}, a path the document does not list"
            if exchange["allow"] != item["x-allow"]:
                return "unrouted", (
                    f"Allow is {exchange['allow']!r}; the path's x-allow is {item['x-allow']!r}"
                )
        return "unrouted", self.judge_response(exchange, f"/x-unrouted/{status}")

    def judge_response(self, exchange, pointer):
        response, pointer = self.response(pointer)
        body = exchange["body"]
        for header in response.get("headers", {}):
            if header.lower() == "allow" and exchange["allow"] is None:
                return "the response documents an Allow header; none was sent"
        content = response.get("content")
        if exchange["method"] == "HEAD" or not content:
            if body:
                return f"a body where none is documented: {body[:200]!r}"
            return None
        media_type = exchange["content_type"]
        if media_type not in content:
            return f"content type {media_type!r} is not documented (documented: {', '.join(content)})"
        schema_pointer = f"{pointer}/content/{pointer_escape(media_type)}/schema"
        if media_type == "application/json":
            try:
                instances = [json.loads(body)]
            except ValueError as e:
                return f"the body is not JSON ({e}): {body[:200]!r}"
        elif media_type == "application/x-ndjson":
            try:
                instances = [json.loads(line) for line in body.splitlines() if line]
            except ValueError as e:
                return f"a line is not JSON ({e})"
        else:
            instances = [body]
        for instance in instances:
            error = self.validate(instance, schema_pointer)
            if error is not None:
                return error
        return None


def main():
    with open(sys.argv[1], encoding="utf-8") as file:
        document = Document(json.load(file))
    exchanges = json.load(sys.stdin)
    verdicts = []
    for exchange in exchanges:
        operation, error = document.judge(exchange)
        verdicts.append({"operation": operation, "error": error})
    json.dump(verdicts, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
