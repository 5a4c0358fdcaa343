//! PUT, GET (with Range), HEAD and DELETE Multiple Objects.

use super::*;

pub(super) fn put_object(ctx: &Ctx<'_>, body: Bytes) -> CosResult<HttpResponse> {
    check_content_md5(ctx.req, &body)?;
    let etag = hex::encode(Md5::digest(&body));
    let (meta, headers) = object_headers(ctx.req);
    let object = ObjectMeta {
        key: ctx.target.key.clone(),
        size: body.len() as u64,
        etag: etag.clone(),
        content_type: content_type(ctx.req),
        last_modified: ctx.now,
        meta,
        headers,
        data_file: None,
    };
    ctx.state
        .cos
        .put(&ctx.target.bucket, object, body)
        .map_err(io_error)?;
    Ok(base_response(StatusCode::OK, ctx.request_id)
        .insert_header(("etag", quoted(&etag)))
        .finish())
}

/// A parsed `Range` header: `None` to serve the whole object, `Err` when unsatisfiable.
pub(super) fn parse_range(raw: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = raw.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let n: u64 = last.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        return Some(Ok((size - n.min(size), size - 1)));
    }
    let start: u64 = first.parse().ok()?;
    let end = if last.is_empty() {
        None
    } else {
        Some(last.parse::<u64>().ok()?)
    };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    if start >= size {
        return Some(Err(()));
    }
    Some(Ok((start, end.map_or(size - 1, |e| e.min(size - 1)))))
}

pub(super) fn get_object(ctx: &Ctx<'_>, head: bool) -> CosResult<HttpResponse> {
    let Some(object) = ctx.state.cos.get(&ctx.target.bucket, &ctx.target.key) else {
        return Err(CosError::no_such_key());
    };
    let meta = &object.meta;
    let range = header(ctx.req, "range").and_then(|r| parse_range(r, meta.size));
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, meta.size),
        Some(Ok((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Some(Err(())) => {
            return Err(CosError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                format!(
                    "The requested range is not satisfiable (object size {}).",
                    meta.size
                ),
            ));
        }
    };
    let mut builder = base_response(status, ctx.request_id);
    builder
        .insert_header(("content-type", meta.content_type.clone()))
        .insert_header(("etag", quoted(&meta.etag)))
        .insert_header(("last-modified", http_date(meta.last_modified)))
        .insert_header(("accept-ranges", "bytes"));
    for (name, value) in meta.meta.iter().chain(meta.headers.iter()) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            builder.insert_header((n, v));
        }
    }
    if status == StatusCode::PARTIAL_CONTENT {
        builder.insert_header((
            "content-range",
            format!("bytes {start}-{}/{}", start + len - 1, meta.size),
        ));
    }
    // response-* parameters override the stored headers (GET only, as in COS).
    if !head {
        for (param, name) in [
            ("response-content-type", "content-type"),
            ("response-content-language", "content-language"),
            ("response-expires", "expires"),
            ("response-cache-control", "cache-control"),
            ("response-content-disposition", "content-disposition"),
            ("response-content-encoding", "content-encoding"),
        ] {
            if let Some(v) = ctx.query.non_empty(param)
                && let Ok(v) = HeaderValue::try_from(v)
            {
                builder.insert_header((name, v));
            }
        }
    }
    if head {
        let empty = futures_util::stream::empty::<Result<Bytes, std::io::Error>>();
        return Ok(builder.body(actix_web::body::SizedStream::new(len, empty)));
    }
    let data = object.body.read_range(start, len).map_err(io_error)?;
    Ok(builder.body(data))
}

pub(super) fn delete_multiple(ctx: &Ctx<'_>, body: &[u8]) -> CosResult<HttpResponse> {
    check_content_md5(ctx.req, body)?;
    let text = std::str::from_utf8(body).map_err(|_| CosError::malformed_xml())?;
    let quiet = xml::first_text(text, "Quiet").is_some_and(|q| q.eq_ignore_ascii_case("true"));
    let objects = xml::elements(text, "Object").ok_or_else(CosError::malformed_xml)?;
    if objects.is_empty() || objects.len() > MAX_KEYS {
        return Err(CosError::malformed_xml());
    }
    let mut w = Writer::new("DeleteResult");
    for object in objects {
        let key = xml::first_text(object, "Key").ok_or_else(CosError::malformed_xml)?;
        let outcome = if key.is_empty() {
            Err(CosError::invalid_argument("The key must not be empty."))
        } else {
            authorize(ctx.principal, "DeleteObject", ctx.target, &key, ctx.context).and_then(|()| {
                ctx.state
                    .cos
                    .delete(&ctx.target.bucket, &key)
                    .map_err(io_error)
            })
        };
        match outcome {
            Ok(_) if quiet => {}
            Ok(_) => {
                w.open("Deleted").elem("Key", &key).close("Deleted");
            }
            Err(e) => {
                w.open("Error")
                    .elem("Key", &key)
                    .elem("Code", e.code)
                    .elem("Message", &e.message)
                    .close("Error");
            }
        }
    }
    Ok(xml_response(ctx.request_id, w.finish("DeleteResult")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=90-200", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-200", 100), Some(Ok((0, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-", 0), Some(Err(())));
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
