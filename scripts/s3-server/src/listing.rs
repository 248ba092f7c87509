//! `ListObjectsV2` without a delimiter in time that grows with the page,
//! not with the bucket.
//!
//! `s3s-fs` answers every page of a listing by walking the whole bucket,
//! one `spawn_blocking` per file for its type and another for its metadata,
//! then sorting every key and dropping those up to the continuation token.
//! A listing of 10,000 objects took 10 pages of ~0.5 s each here (5 s, and
//! 3.7 s of the server's CPU), so a benchmark that lists a prefix measured
//! this walk, not the client: real S3 answers a page of 1,000 keys in tens
//! of milliseconds whatever the bucket holds.
//!
//! [`Store`] serves that one request itself: it walks only the directories
//! that can hold keys under the prefix and after the token, in key order,
//! reads the metadata of the keys it returns and stops at the page's end,
//! all on one blocking thread. Everything else, listings with a delimiter
//! (`list_with_delimiter`) included, goes to `s3s-fs` unchanged, except
//! that a whole object's body is read in larger pieces (see `get_object`).

use std::path::{Path, PathBuf};

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use s3s_fs::FileSystem;
use tokio_util::io::ReaderStream;

/// How much of an object's file a GET reads at a time.
const READ_CHUNK: usize = 256 << 10;
/// Bodies larger than this are read in [`READ_CHUNK`] pieces.
const LARGE_BODY: i64 = 64 << 10;

/// `s3s-fs` with a listing that reads only what it returns.
pub struct Store {
    fs: FileSystem,
    /// The canonical root, as `s3s-fs` resolves it: a bucket is a
    /// directory under it, an object a file under that.
    root: PathBuf,
}

impl Store {
    pub fn new(root: &str) -> std::io::Result<Self> {
        let root = std::env::current_dir()?.join(root).canonicalize()?;
        let fs = FileSystem::new(&root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        Ok(Store { fs, root })
    }
}

/// One page of keys under `prefix` after `after`, in key order, with
/// their sizes and modification times; `truncated` if more follow.
struct Page {
    objects: Vec<Object>,
    truncated: bool,
}

/// Walks `bucket` for up to `max` keys that start with `prefix` and sort
/// after `after`.
///
/// Keys are paths under the bucket joined with `/`. Within a directory the
/// entries are visited sorted by name, a directory's name followed by `/`:
/// every key under directory `d` starts with `d/`, so that order is the
/// keys' byte order. A directory none of whose keys can match (not on the
/// prefix's path, or wholly at or before `after`) is not opened.
fn walk(bucket: &Path, prefix: &str, after: &str, max: usize) -> std::io::Result<Page> {
    let mut page = Page {
        objects: Vec::new(),
        truncated: false,
    };
    // Depth first, each directory's entries in key order; the stack holds
    // the entries still to visit, last first.
    let mut stack: Vec<(String, bool)> = Vec::new();
    push_dir(bucket, "", prefix, after, &mut stack)?;
    while let Some((key, is_dir)) = stack.pop() {
        if is_dir {
            push_dir(&bucket.join(&key), &key, prefix, after, &mut stack)?;
            continue;
        }
        if page.objects.len() == max {
            page.truncated = true;
            break;
        }
        let metadata = match std::fs::metadata(bucket.join(&key)) {
            Ok(metadata) => metadata,
            // Deleted since the directory was read: not there any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        page.objects.push(Object {
            size: Some(i64::try_from(metadata.len()).unwrap_or(i64::MAX)),
            last_modified: metadata.modified().ok().map(Timestamp::from),
            key: Some(key),
            ..Default::default()
        });
    }
    Ok(page)
}

/// Pushes the entries of directory `path` (holding the keys that start
/// with `dir`, which is empty or ends with `/`) that may hold a matching
/// key onto `stack`, so that they pop in key order. A directory's entry is
/// its `dir` for its own entries: its path from the bucket and a `/`.
fn push_dir(
    path: &Path,
    dir: &str,
    prefix: &str,
    after: &str,
    stack: &mut Vec<(String, bool)>,
) -> std::io::Result<()> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        // As `s3s-fs`: a name that is not UTF-8 is no key.
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let is_dir = entry.file_type()?.is_dir();
        let key = if is_dir {
            format!("{dir}{name}/")
        } else {
            format!("{dir}{name}")
        };
        let wanted = if is_dir {
            // On the prefix's path, and not wholly at or before `after`:
            // if `after` does not run through this directory and sorts
            // after its `d/`, it sorts after every key in it.
            (key.starts_with(prefix) || prefix.starts_with(&key))
                && (after.starts_with(&key) || key.as_str() > after)
        } else {
            key.starts_with(prefix) && key.as_str() > after
        };
        if wanted {
            entries.push((key, is_dir));
        }
    }
    entries.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    stack.extend(entries);
    Ok(())
}

/// A key that maps to a file under its bucket's directory, nothing else:
/// no empty, `.` or `..` segment.
fn plain_key(key: &str) -> bool {
    !key.contains(['\\', '\0'])
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// A bucket name that maps to a directory right under the root, nothing
/// else (`s3s` checks names, this only makes sure of it).
fn plain_name(bucket: &str) -> bool {
    !bucket.is_empty() && bucket != "." && bucket != ".." && !bucket.contains(['/', '\\', '\0'])
}

#[async_trait::async_trait]
impl S3 for Store {
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = &req.input;
        let bucket = self.root.join(&input.bucket);
        // With a delimiter, or anything unusual, `s3s-fs` answers.
        if input.delimiter.is_some()
            || input.max_keys == Some(0)
            || !plain_name(&input.bucket)
            || !bucket.is_dir()
        {
            return self.fs.list_objects_v2(req).await;
        }
        let input = req.input;
        let prefix = input
            .prefix
            .as_deref()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_owned();
        let max_keys = input.max_keys.unwrap_or(1000);
        let max = usize::try_from(max_keys).unwrap_or(0);
        // As `s3s-fs`: the later of the token and `start-after`.
        let after = match (
            input.continuation_token.as_deref(),
            input.start_after.as_deref(),
        ) {
            (Some(ct), Some(sa)) => ct.max(sa),
            (Some(ct), None) => ct,
            (None, Some(sa)) => sa,
            (None, None) => "",
        }
        .to_owned();
        let page = tokio::task::spawn_blocking(move || walk(&bucket, &prefix, &after, max))
            .await
            .map_err(|e| s3_error!(InternalError, "listing: {e}"))?
            .map_err(|e| s3_error!(InternalError, "listing: {e}"))?;
        let key_count = i32::try_from(page.objects.len()).unwrap_or(i32::MAX);
        // As `s3s-fs`: the token is the last key returned.
        let next_continuation_token = page
            .truncated
            .then(|| page.objects.last().and_then(|o| o.key.clone()))
            .flatten();
        let output = ListObjectsV2Output {
            key_count: Some(key_count),
            max_keys: Some(max_keys),
            is_truncated: Some(page.truncated),
            contents: (!page.objects.is_empty()).then_some(page.objects),
            continuation_token: input.continuation_token,
            next_continuation_token,
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            prefix: input.prefix,
            start_after: input.start_after,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    // Everything else is `s3s-fs`'s.

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.fs.copy_object(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.fs.delete_bucket(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }

    /// `s3s-fs`'s answer, with the body read in [`READ_CHUNK`] pieces
    /// where it reads 4 KB at a time (a `spawn_blocking` each: 4,096 for a
    /// 16 MiB object, ~0.2 s of the server's CPU on the 2 cores the reader
    /// shares with it). Only a whole object over [`LARGE_BODY`] under a
    /// plain key; a range or anything unusual keeps `s3s-fs`'s body.
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = &req.input;
        let path = (input.range.is_none() && plain_name(&input.bucket) && plain_key(&input.key))
            .then(|| self.root.join(&input.bucket).join(&input.key));
        let mut response = self.fs.get_object(req).await?;
        // A small body is a read or a few: not worth opening the file again.
        let large = (response.output.content_length).is_some_and(|n| n > LARGE_BODY);
        if let Some(path) = path.filter(|_| large)
            && let Ok(file) = tokio::fs::File::open(&path).await
            && let Ok(metadata) = file.metadata().await
            // The same file as the headers describe, not one put since.
            && i64::try_from(metadata.len()).ok() == response.output.content_length
        {
            response.output.body = Some(StreamingBlob::wrap(ReaderStream::with_capacity(
                file, READ_CHUNK,
            )));
        }
        Ok(response)
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.fs.put_object(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.fs.upload_part_copy(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.fs.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }
}
