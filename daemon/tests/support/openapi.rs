//! Checks API answers against the OpenAPI document (`openapi.yaml`, which a unit test keeps equal
//! to [`wgmeshd::api::openapi::json`]).
//!
//! The schemas are validated by our own validator of the JSON Schema subset the document uses
//! (2020-12 as OpenAPI 3.1 has it): `$ref`, `type` (one or a list, `null` included),
//! `properties`, `required`, `additionalProperties`, `propertyNames`, `items`, `enum`, `const`,
//! `oneOf`, `anyOf`, `allOf`, `minimum`, `maximum`, plus annotations it ignores (`description`,
//! `format`, …). A keyword outside that list fails validation, so a document that starts using
//! one makes the tests fail instead of passing unchecked ([`Spec::unknown_keywords`] is also
//! tested on the whole document). A JSON Schema crate would bring dozens of crates (regex engines,
//! URL and IDNA handling, HTTP for remote references) for a few hundred lines of checks.

// Shared by several test programs, each of which uses a part.
#![allow(dead_code)]

use serde_json::Value;

/// Schema keywords the validator checks.
const CHECKED: [&str; 14] = [
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "propertyNames",
    "items",
    "enum",
    "const",
    "oneOf",
    "anyOf",
    "allOf",
    "minimum",
    "maximum",
];
/// Schema keywords that only annotate.
const ANNOTATIONS: [&str; 7] = [
    "description",
    "format",
    "title",
    "example",
    "examples",
    "default",
    "deprecated",
];

/// The OpenAPI document.
pub struct Spec {
    doc: Value,
}

impl Spec {
    /// The document the daemon generates (the committed `openapi.yaml`, as its drift test holds).
    pub fn generated() -> Self {
        Self {
            doc: wgmeshd::api::openapi::json().expect("the OpenAPI document serializes"),
        }
    }

    /// Checks an answer to `method path` (a concrete path, query allowed): its status must be
    /// documented for the operation, with its content type, and the body must match the schema
    /// (every line of NDJSON; every `data:` line of server-sent events, as an `Event`).
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let path = path.split('?').next().unwrap_or(path);
        let template = self
            .template_of(path)
            .ok_or_else(|| format!("{path} matches no path of the document"))?;
        let what = format!("{method} {template} → {status}");
        let operation = &self.doc["paths"][template][method.to_ascii_lowercase()];
        if !operation.is_object() {
            return Err(format!("{method} {template} is not in the document"));
        }
        let response = operation["responses"]
            .get(status.to_string())
            .ok_or_else(|| format!("{what}: status not documented"))?;
        let content = &response["content"];
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !content.is_object() {
            return if body.is_empty() {
                Ok(())
            } else {
                Err(format!("{what}: a body where none is documented"))
            };
        }
        let Some(schema) = content.get(&media).map(|c| &c["schema"]) else {
            let documented: Vec<&String> = content
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
                .collect();
            return Err(format!(
                "{what}: content type {media:?} not documented (documented: {documented:?})"
            ));
        };
        let text = std::str::from_utf8(body).map_err(|e| format!("{what}: body not UTF-8: {e}"))?;
        match media.as_str() {
            "application/x-ndjson" => {
                for line in text.lines().filter(|l| !l.is_empty()) {
                    let value = parse(line).map_err(|e| format!("{what}: {e}"))?;
                    self.validate(schema, &value, "")
                        .map_err(|e| format!("{what}: {line}: {e}"))?;
                }
                Ok(())
            }
            // Plain text (the Prometheus exposition): documented as a string; its grammar is
            // checked by the metrics tests.
            "text/plain" => Ok(()),
            "text/event-stream" => {
                let event = Value::from("#/components/schemas/Event");
                let event = serde_json::json!({ "$ref": event });
                for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
                    let value = parse(data).map_err(|e| format!("{what}: {e}"))?;
                    self.validate(&event, &value, "")
                        .map_err(|e| format!("{what}: {data}: {e}"))?;
                }
                Ok(())
            }
            _ => {
                let value = parse(text).map_err(|e| format!("{what}: {e}"))?;
                self.validate(schema, &value, "")
                    .map_err(|e| format!("{what}: {e}"))
            }
        }
    }

    /// Validates `value` against the component schema `name`.
    pub fn validate_component(&self, name: &str, value: &Value) -> Result<(), String> {
        let schema = serde_json::json!({ "$ref": format!("#/components/schemas/{name}") });
        self.validate(&schema, value, "")
    }

    /// The path of the document `path` is an instance of; a `{param}` matches one segment, or
    /// the rest of the path when it is the last.
    fn template_of(&self, path: &str) -> Option<&str> {
        let concrete: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()?
            .keys()
            .map(String::as_str)
            .find(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                let Some((last, init)) = parts.split_last() else {
                    return false;
                };
                let is_param = |p: &str| p.starts_with('{') && p.ends_with('}');
                if concrete.len() < parts.len() || (concrete.len() > parts.len() && !is_param(last))
                {
                    return false;
                }
                init.iter()
                    .zip(&concrete)
                    .all(|(t, c)| is_param(t) || t == c)
                    && (is_param(last) || concrete.last() == Some(last))
                    && concrete.get(init.len()).is_some_and(|c| !c.is_empty())
            })
    }

    /// Validates `value` against `schema`; the error names the JSON pointer `at` of the failure.
    pub fn validate(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let Some(schema) = schema.as_object() else {
            return match schema {
                Value::Bool(true) => Ok(()),
                _ => Err(format!("{at}: refused by schema {schema}")),
            };
        };
        for keyword in schema.keys() {
            if !CHECKED.contains(&keyword.as_str()) && !ANNOTATIONS.contains(&keyword.as_str()) {
                return Err(format!(
                    "{at}: the validator does not know keyword {keyword:?}"
                ));
            }
        }
        if let Some(reference) = schema.get("$ref") {
            let target = self.resolve(reference)?;
            self.validate(target, value, at)?;
        }
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                other => return Err(format!("{at}: bad type keyword {other}")),
            };
            if !allowed.iter().any(|t| is_type(value, t)) {
                return Err(format!("{at}: {value} is not of type {allowed:?}"));
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
        if let Some(constant) = schema.get("const")
            && constant != value
        {
            return Err(format!("{at}: {value} is not {constant}"));
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                return Err(format!("{at}: {n} is below the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                return Err(format!("{at}: {n} is above the maximum {max}"));
            }
        }
        if let Some(object) = value.as_object() {
            self.validate_object(schema, object, at)?;
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                self.validate(items, item, &format!("{at}/{i}"))?;
            }
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.validate(sub, value, at)?;
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
            && !any.iter().any(|sub| self.validate(sub, value, at).is_ok())
        {
            return Err(format!("{at}: {value} matches none of anyOf"));
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let errors: Vec<String> = one
                .iter()
                .filter_map(|sub| self.validate(sub, value, at).err())
                .collect();
            let matched = one.len() - errors.len();
            if matched != 1 {
                return Err(format!(
                    "{at}: {value} matches {matched} of oneOf (exactly 1 wanted): {errors:?}"
                ));
            }
        }
        Ok(())
    }

    fn validate_object(
        &self,
        schema: &serde_json::Map<String, Value>,
        object: &serde_json::Map<String, Value>,
        at: &str,
    ) -> Result<(), String> {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                return Err(format!("{at}: required member {name:?} is missing"));
            }
        }
        for (key, member) in object {
            let here = format!("{at}/{key}");
            if let Some(names) = schema.get("propertyNames") {
                self.validate(names, &Value::from(key.as_str()), &here)?;
            }
            match properties.and_then(|p| p.get(key)) {
                Some(sub) => self.validate(sub, member, &here)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{here}: member not allowed"));
                    }
                    Some(extra) => self.validate(extra, member, &here)?,
                    None => {}
                },
            }
        }
        Ok(())
    }

    fn resolve(&self, reference: &Value) -> Result<&Value, String> {
        let pointer = reference
            .as_str()
            .and_then(|r| r.strip_prefix('#'))
            .ok_or_else(|| format!("unsupported $ref {reference}"))?;
        self.doc
            .pointer(pointer)
            .ok_or_else(|| format!("$ref {reference} points nowhere"))
    }

    /// Every keyword in a schema of the document that the validator neither checks nor ignores.
    pub fn unknown_keywords(&self) -> Vec<String> {
        let mut unknown = Vec::new();
        let mut schemas: Vec<(String, &Value)> = Vec::new();
        if let Some(components) = self.doc["components"]["schemas"].as_object() {
            schemas.extend(
                components
                    .iter()
                    .map(|(k, v)| (format!("components/{k}"), v)),
            );
        }
        for (path, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let at = format!("{method} {path}");
                for p in op["parameters"].as_array().into_iter().flatten() {
                    schemas.push((format!("{at} parameter"), &p["schema"]));
                }
                for c in op["requestBody"]["content"]
                    .as_object()
                    .into_iter()
                    .flatten()
                {
                    schemas.push((format!("{at} body"), &c.1["schema"]));
                }
                for (status, r) in op["responses"].as_object().into_iter().flatten() {
                    for c in r["content"].as_object().into_iter().flatten() {
                        schemas.push((format!("{at} {status}"), &c.1["schema"]));
                    }
                }
            }
        }
        while let Some((at, schema)) = schemas.pop() {
            let Some(object) = schema.as_object() else {
                continue;
            };
            for (keyword, sub) in object {
                match keyword.as_str() {
                    "properties" => schemas.extend(
                        sub.as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (format!("{at}/{k}"), v)),
                    ),
                    "items" | "additionalProperties" | "propertyNames" => {
                        schemas.push((format!("{at}/{keyword}"), sub));
                    }
                    "oneOf" | "anyOf" | "allOf" => schemas.extend(
                        sub.as_array()
                            .into_iter()
                            .flatten()
                            .map(|v| (format!("{at}/{keyword}"), v)),
                    ),
                    k if CHECKED.contains(&k) || ANNOTATIONS.contains(&k) => {}
                    other => unknown.push(format!("{at}: {other}")),
                }
            }
        }
        unknown
    }
}

fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}
