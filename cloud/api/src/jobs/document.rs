//! Presigned-URL placeholders in job documents.
//!
//! A job document may hold `${aws:iot:s3-presigned-url:https://s3.region.amazonaws.com/bucket/key}`
//! in any string value; when a device receives the document, AWS IoT replaces
//! each placeholder with a presigned URL for that object ("Job document" and
//! "Presigned URLs" in the AWS IoT Core Developer Guide). This module finds and
//! replaces them; presigning is the caller's closure.
//!
//! Rules (our decisions where the guide is silent):
//! - only string **values** are searched, at any depth; object keys are left alone;
//! - a placeholder runs from `${aws:iot:s3-presigned-url:` to the first `}`; the
//!   text between is handed to the closure unchanged, which may refuse it (for
//!   example, not an S3 URL) and so fail the whole substitution;
//! - a placeholder with no closing `}` or with an empty URL is not a placeholder:
//!   it stays as it is, as does every other `${…}`.

use serde_json::Value;

/// The placeholder's opening.
pub const PRESIGNED_URL_PREFIX: &str = "${aws:iot:s3-presigned-url:";

/// Every placeholder URL in a document, in document order.
pub fn presigned_url_placeholders(document: &Value) -> Vec<String> {
    let mut urls = Vec::new();
    let _ = substitute_presigned_urls(document, |url| {
        urls.push(url.to_owned());
        Ok::<_, std::convert::Infallible>(String::new())
    });
    urls
}

/// A copy of `document` with each placeholder replaced by `presign(url)`;
/// the first error of `presign` is returned as is.
pub fn substitute_presigned_urls<E>(
    document: &Value,
    mut presign: impl FnMut(&str) -> Result<String, E>,
) -> Result<Value, E> {
    substitute(document, &mut presign)
}

fn substitute<E>(value: &Value, presign: &mut impl FnMut(&str) -> Result<String, E>) -> Result<Value, E> {
    Ok(match value {
        Value::String(text) => Value::String(substitute_text(text, presign)?),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, presign)).collect::<Result<_, _>>()?),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| Ok((k.clone(), substitute(v, presign)?))).collect::<Result<_, E>>()?)
        }
        other => other.clone(),
    })
}

fn substitute_text<E>(text: &str, presign: &mut impl FnMut(&str) -> Result<String, E>) -> Result<String, E> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(PRESIGNED_URL_PREFIX) {
        let after = &rest[start + PRESIGNED_URL_PREFIX.len()..];
        match after.find('}') {
            Some(end) if end > 0 => {
                out.push_str(&rest[..start]);
                out.push_str(&presign(&after[..end])?);
                rest = &after[end + 1..];
            }
            _ => {
                // Not a placeholder: keep the prefix text and look further on.
                out.push_str(&rest[..start + PRESIGNED_URL_PREFIX.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signed(url: &str) -> Result<String, String> {
        Ok(format!("{url}?X-Amz-Signature=abc"))
    }

    #[test]
    fn placeholders_at_any_depth_are_replaced_and_other_text_kept() {
        let doc = json!({
            "operation": "download",
            "files": [{"url": "${aws:iot:s3-presigned-url:https://s3.us-east-1.amazonaws.com/b/k1}", "size": 3}],
            "nested": {"deep": {"both": "a ${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k2} b ${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k3}"}},
            "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/key-as-key}": "${other:thing}",
            "n": null, "t": true
        });
        let out = substitute_presigned_urls(&doc, signed).unwrap();
        assert_eq!(out["files"][0]["url"], "https://s3.us-east-1.amazonaws.com/b/k1?X-Amz-Signature=abc");
        assert_eq!(out["files"][0]["size"], 3);
        assert_eq!(
            out["nested"]["deep"]["both"],
            "a https://s3.amazonaws.com/b/k2?X-Amz-Signature=abc b https://s3.amazonaws.com/b/k3?X-Amz-Signature=abc"
        );
        assert_eq!(out["${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/key-as-key}"], "${other:thing}");
        assert_eq!((out["n"].clone(), out["t"].clone()), (json!(null), json!(true)));
        assert_eq!(
            presigned_url_placeholders(&doc),
            [
                "https://s3.us-east-1.amazonaws.com/b/k1",
                "https://s3.amazonaws.com/b/k2",
                "https://s3.amazonaws.com/b/k3"
            ],
            "keys are not searched"
        );
    }

    #[test]
    fn malformed_placeholders_are_left_as_they_are() {
        for text in [
            "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k",
            "${aws:iot:s3-presigned-url:}",
            "$aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k}",
            "${aws:iot:s3-presigned-url https://s3.amazonaws.com/b/k}",
        ] {
            let out = substitute_presigned_urls(&json!({"u": text}), signed).unwrap();
            assert_eq!(out["u"], text);
        }
        let out = substitute_presigned_urls(
            &json!("${aws:iot:s3-presigned-url:} then ${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k}"),
            signed,
        )
        .unwrap();
        assert_eq!(out, "${aws:iot:s3-presigned-url:} then https://s3.amazonaws.com/b/k?X-Amz-Signature=abc");
    }

    #[test]
    fn a_refused_url_fails_the_substitution() {
        let doc = json!({"u": "${aws:iot:s3-presigned-url:ftp://elsewhere/k}"});
        let refused = substitute_presigned_urls(&doc, |url| {
            if url.starts_with("https://s3.") { signed(url) } else { Err(format!("not an S3 URL: {url}")) }
        });
        assert_eq!(refused, Err("not an S3 URL: ftp://elsewhere/k".into()));
    }
}
