//! GET Bucket (list objects) and List Multipart Uploads.

use super::*;

pub(super) fn get_bucket(ctx: &Ctx<'_>) -> CosResult<HttpResponse> {
    let prefix = ctx.query.get("prefix").unwrap_or_default();
    let delimiter = ctx.query.get("delimiter").unwrap_or_default();
    let marker = ctx.query.get("marker").unwrap_or_default();
    let max_keys = max_param(ctx.query, "max-keys")?;
    let url = encoding(ctx.query)?;
    let enc = |s: &str| if url { encode_url(s) } else { s.to_owned() };

    enum Entry {
        Object(String, ObjectMeta),
        Prefix(String),
    }
    let (entries, truncated) = ctx.state.cos.with_bucket(&ctx.target.bucket, |objects| {
        let mut entries: Vec<Entry> = Vec::new();
        let mut truncated = false;
        let start = if marker > prefix { marker } else { prefix };
        let lower = if start == marker && !marker.is_empty() {
            Bound::Excluded(start.to_owned())
        } else {
            Bound::Included(start.to_owned())
        };
        let mut last_prefix: Option<String> = None;
        for (key, object) in objects.range((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                if key.as_str() > prefix {
                    break;
                }
                continue;
            }
            let common = (!delimiter.is_empty())
                .then(|| {
                    key[prefix.len()..]
                        .find(delimiter)
                        .map(|at| key[..prefix.len() + at + delimiter.len()].to_owned())
                })
                .flatten();
            if let Some(common) = common {
                if last_prefix.as_deref() == Some(common.as_str()) || common == marker {
                    continue;
                }
                if entries.len() == max_keys {
                    truncated = true;
                    break;
                }
                last_prefix = Some(common.clone());
                entries.push(Entry::Prefix(common));
            } else {
                if entries.len() == max_keys {
                    truncated = true;
                    break;
                }
                entries.push(Entry::Object(key.clone(), object.meta.clone()));
            }
        }
        (entries, truncated)
    });

    let mut w = Writer::new("ListBucketResult");
    w.elem("Name", &ctx.target.bucket);
    if url {
        w.elem("EncodingType", "url");
    }
    w.elem("Prefix", enc(prefix))
        .elem("Marker", enc(marker))
        .elem("MaxKeys", max_keys.to_string());
    if !delimiter.is_empty() {
        w.elem("Delimiter", enc(delimiter));
    }
    w.elem("IsTruncated", truncated.to_string());
    if truncated && let Some(last) = entries.last() {
        let next = match last {
            Entry::Object(k, _) => k,
            Entry::Prefix(p) => p,
        };
        w.elem("NextMarker", enc(next));
    }
    for entry in &entries {
        match entry {
            Entry::Object(key, meta) => {
                w.open("Contents")
                    .elem("Key", enc(key))
                    .elem("LastModified", iso_date(meta.last_modified))
                    .elem("ETag", quoted(&meta.etag))
                    .elem("Size", meta.size.to_string());
                owner(&mut w, "Owner", &ctx.target.appid);
                w.elem("StorageClass", "STANDARD").close("Contents");
            }
            Entry::Prefix(p) => {
                w.open("CommonPrefixes")
                    .elem("Prefix", enc(p))
                    .close("CommonPrefixes");
            }
        }
    }
    Ok(xml_response(ctx.request_id, w.finish("ListBucketResult")))
}

pub(super) fn list_multipart_uploads(ctx: &Ctx<'_>) -> CosResult<HttpResponse> {
    let prefix = ctx.query.get("prefix").unwrap_or_default();
    let key_marker = ctx.query.get("key-marker").unwrap_or_default();
    let id_marker = ctx.query.get("upload-id-marker").unwrap_or_default();
    let max = max_param(ctx.query, "max-uploads")?;
    let url = encoding(ctx.query)?;
    let enc = |s: &str| if url { encode_url(s) } else { s.to_owned() };
    let all: Vec<UploadMeta> = ctx
        .state
        .cos
        .uploads(&ctx.target.bucket)
        .into_iter()
        .filter(|u| u.key.starts_with(prefix))
        .filter(|u| {
            key_marker.is_empty()
                || u.key.as_str() > key_marker
                || (u.key == key_marker
                    && !id_marker.is_empty()
                    && u.upload_id.as_str() > id_marker)
        })
        .collect();
    let truncated = all.len() > max;
    let shown = &all[..all.len().min(max)];
    let mut w = Writer::new("ListMultipartUploadsResult");
    w.elem("Bucket", &ctx.target.bucket);
    if url {
        w.elem("Encoding-Type", "url");
    }
    w.elem("KeyMarker", enc(key_marker))
        .elem("UploadIdMarker", id_marker)
        .elem("MaxUploads", max.to_string())
        .elem("Prefix", enc(prefix))
        .elem("IsTruncated", truncated.to_string());
    if truncated && let Some(last) = shown.last() {
        w.elem("NextKeyMarker", enc(&last.key))
            .elem("NextUploadIdMarker", &last.upload_id);
    }
    for upload in shown {
        w.open("Upload")
            .elem("Key", enc(&upload.key))
            .elem("UploadId", &upload.upload_id)
            .elem("StorageClass", "STANDARD");
        owner(&mut w, "Initiator", &upload.initiator);
        owner(&mut w, "Owner", &ctx.target.appid);
        w.elem("Initiated", iso_date(upload.initiated))
            .close("Upload");
    }
    Ok(xml_response(
        ctx.request_id,
        w.finish("ListMultipartUploadsResult"),
    ))
}
