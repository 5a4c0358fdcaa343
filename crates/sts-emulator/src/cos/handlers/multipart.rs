//! Multipart uploads: initiate, upload part, list parts, complete.

use super::*;

fn new_upload_id(now: i64) -> String {
    format!(
        "{now}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

pub(super) fn initiate(ctx: &Ctx<'_>) -> CosResult<HttpResponse> {
    let (meta, headers) = object_headers(ctx.req);
    let upload = UploadMeta {
        upload_id: new_upload_id(ctx.now),
        bucket: ctx.target.bucket.clone(),
        key: ctx.target.key.clone(),
        initiated: ctx.now,
        content_type: content_type(ctx.req),
        meta,
        headers,
        initiator: ctx.principal.secret_id().to_owned(),
    };
    let upload_id = upload.upload_id.clone();
    ctx.state.cos.create_upload(upload).map_err(io_error)?;
    let mut w = Writer::new("InitiateMultipartUploadResult");
    w.elem("Bucket", &ctx.target.bucket)
        .elem("Key", &ctx.target.key)
        .elem("UploadId", upload_id);
    Ok(xml_response(
        ctx.request_id,
        w.finish("InitiateMultipartUploadResult"),
    ))
}

pub(super) fn upload_part(
    ctx: &Ctx<'_>,
    number: u32,
    upload_id: &str,
    body: Bytes,
) -> CosResult<HttpResponse> {
    check_content_md5(ctx.req, &body)?;
    let etag = hex::encode(Md5::digest(&body));
    let part = PartMeta {
        number,
        etag: etag.clone(),
        size: body.len() as u64,
        last_modified: ctx.now,
        data_file: None,
    };
    let stored = ctx
        .state
        .cos
        .put_part(&ctx.target.bucket, &ctx.target.key, upload_id, part, body)
        .map_err(io_error)?;
    if !stored {
        return Err(CosError::no_such_upload());
    }
    Ok(base_response(StatusCode::OK, ctx.request_id)
        .insert_header(("etag", quoted(&etag)))
        .finish())
}

pub(super) fn list_parts(ctx: &Ctx<'_>, upload_id: &str) -> CosResult<HttpResponse> {
    let Some((upload, parts)) =
        ctx.state
            .cos
            .upload(&ctx.target.bucket, &ctx.target.key, upload_id)
    else {
        return Err(CosError::no_such_upload());
    };
    let marker: u32 = match ctx.query.non_empty("part-number-marker") {
        None => 0,
        Some(raw) => raw.parse().map_err(|_| {
            CosError::invalid_argument(format!(
                "part-number-marker must be an integer, got {raw:?}."
            ))
        })?,
    };
    let max = max_param(ctx.query, "max-parts")?;
    let url = encoding(ctx.query)?;
    let after: Vec<&PartMeta> = parts.iter().filter(|p| p.number > marker).collect();
    let truncated = after.len() > max;
    let shown = &after[..after.len().min(max)];
    let mut w = Writer::new("ListPartsResult");
    w.elem("Bucket", &ctx.target.bucket);
    if url {
        w.elem("Encoding-type", "url");
    }
    w.elem(
        "Key",
        if url {
            encode_url(&upload.key)
        } else {
            upload.key.clone()
        },
    )
    .elem("UploadId", &upload.upload_id);
    owner(&mut w, "Initiator", &upload.initiator);
    owner(&mut w, "Owner", &ctx.target.appid);
    w.elem("PartNumberMarker", marker.to_string());
    for part in shown {
        w.open("Part")
            .elem("PartNumber", part.number.to_string())
            .elem("LastModified", iso_date(part.last_modified))
            .elem("ETag", quoted(&part.etag))
            .elem("Size", part.size.to_string())
            .close("Part");
    }
    if let Some(last) = shown.last() {
        w.elem("NextPartNumberMarker", last.number.to_string());
    }
    w.elem("StorageClass", "STANDARD")
        .elem("MaxParts", max.to_string())
        .elem("IsTruncated", truncated.to_string());
    Ok(xml_response(ctx.request_id, w.finish("ListPartsResult")))
}

pub(super) fn complete(ctx: &Ctx<'_>, upload_id: &str, body: &[u8]) -> CosResult<HttpResponse> {
    let text = std::str::from_utf8(body).map_err(|_| CosError::malformed_xml())?;
    let mut parts = Vec::new();
    for part in xml::elements(text, "Part").ok_or_else(CosError::malformed_xml)? {
        let number = xml::first_text(part, "PartNumber")
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(CosError::malformed_xml)?;
        let etag = xml::first_text(part, "ETag").ok_or_else(CosError::malformed_xml)?;
        parts.push((number, etag));
    }
    if parts.is_empty() {
        return Err(CosError::malformed_xml());
    }
    let result = ctx.state.cos.complete(
        &ctx.target.bucket,
        &ctx.target.key,
        upload_id,
        &parts,
        MIN_PART_SIZE,
        ctx.now,
    );
    let meta = match result {
        Ok(meta) => meta,
        Err(CompleteError::NoSuchUpload) => return Err(CosError::no_such_upload()),
        Err(CompleteError::InvalidPart(n)) => {
            return Err(CosError::new(
                StatusCode::BAD_REQUEST,
                "InvalidPart",
                format!(
                    "One or more of the specified parts could not be found or its ETag did not match (part {n})."
                ),
            ));
        }
        Err(CompleteError::InvalidPartOrder) => {
            return Err(CosError::new(
                StatusCode::BAD_REQUEST,
                "InvalidPartOrder",
                "The list of parts was not in ascending order.",
            ));
        }
        Err(CompleteError::EntityTooSmall(n)) => {
            return Err(CosError::new(
                StatusCode::BAD_REQUEST,
                "EntityTooSmall",
                format!("Part {n} is smaller than the minimum allowed part size of 1 MB."),
            ));
        }
        Err(CompleteError::Io(e)) => return Err(io_error(e)),
    };
    let region = ctx.target.region.as_deref().unwrap_or("ap-guangzhou");
    let mut w = Writer::new("CompleteMultipartUploadResult");
    w.elem(
        "Location",
        format!(
            "{}.cos.{region}.myqcloud.com/{}",
            ctx.target.bucket, ctx.target.key
        ),
    )
    .elem("Bucket", &ctx.target.bucket)
    .elem("Key", &ctx.target.key)
    .elem("ETag", quoted(&meta.etag));
    Ok(xml_response(
        ctx.request_id,
        w.finish("CompleteMultipartUploadResult"),
    ))
}
