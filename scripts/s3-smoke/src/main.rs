//! `s3-smoke`: checks the local S3-compatible test server with the same
//! client the runtime uses (`object_store`'s AmazonS3).
//!
//! ```text
//! s3-smoke create-bucket   create $CAISSON_TEST_S3_BUCKET (ok if it exists)
//! s3-smoke check           run every check, exit 1 if one fails
//! ```
//!
//! Reads CAISSON_TEST_S3_{ENDPOINT,BUCKET,ACCESS_KEY_ID,SECRET_ACCESS_KEY,REGION};
//! `eval "$(scripts/services env)"` sets them.
//!
//! Required checks decide the exit code. Probes (printed as NOTE) report
//! S3 behaviour the runtime does not rely on but that a faithful server
//! has, so the gaps of the chosen server are written down, not guessed.

use std::ops::Range;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, PutMode, PutPayload, RetryConfig};

const MIB: usize = 1024 * 1024;
const LIST_OBJECTS: usize = 1_500;

#[derive(Clone)]
struct Config {
    endpoint: String,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
    region: String,
}

impl Config {
    fn from_env() -> Result<Self> {
        fn var(name: &str) -> Result<String> {
            std::env::var(name).map_err(|_| {
                anyhow!("{name} is not set; run `eval \"$(scripts/services env)\"` first")
            })
        }
        Ok(Self {
            endpoint: var("CAISSON_TEST_S3_ENDPOINT")?
                .trim_end_matches('/')
                .to_owned(),
            bucket: var("CAISSON_TEST_S3_BUCKET")?,
            access_key_id: var("CAISSON_TEST_S3_ACCESS_KEY_ID")?,
            secret_access_key: var("CAISSON_TEST_S3_SECRET_ACCESS_KEY")?,
            region: std::env::var("CAISSON_TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        })
    }

    fn builder(&self, key_id: &str, secret: &str) -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(key_id)
            .with_secret_access_key(secret)
            .with_region(&self.region)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
    }

    fn store(&self) -> Result<AmazonS3> {
        Ok(self
            .builder(&self.access_key_id, &self.secret_access_key)
            .build()?)
    }

    /// A client that must be turned away: no retries, so a rejection is quick.
    fn rejected_store(&self, key_id: &str, secret: &str, skip_signature: bool) -> Result<AmazonS3> {
        Ok(self
            .builder(key_id, secret)
            .with_skip_signature(skip_signature)
            .with_retry(RetryConfig {
                max_retries: 0,
                retry_timeout: Duration::from_secs(10),
                ..Default::default()
            })
            .build()?)
    }

    /// Sends one SigV4-signed request by hand, for what `object_store` has
    /// no call for (creating a bucket, a raw list page, a forged digest).
    async fn raw(
        &self,
        method: &str,
        path_and_query: &str,
        body: Vec<u8>,
        claimed_digest: Option<&[u8]>,
    ) -> Result<(u16, String)> {
        let client =
            ReqwestConnector::default().connect(&ClientOptions::new().with_allow_http(true))?;
        let url = format!("{}/{}", self.endpoint, path_and_query);
        let mut request = object_store::client::HttpRequest::new(HttpRequestBody::from(body));
        *request.method_mut() = method.parse()?;
        *request.uri_mut() = url.parse().with_context(|| format!("bad url {url}"))?;
        let credential = AwsCredential {
            key_id: self.access_key_id.clone(),
            secret_key: self.secret_access_key.clone(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut request, claimed_digest);
        let response = client
            .execute(request)
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let body = response.into_body().bytes().await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Deterministic bytes that are not all alike, so a mixed-up part shows.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn xml_tag<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(&body[start..end])
}

#[derive(Default)]
struct Report {
    passed: Vec<String>,
    failed: Vec<String>,
    notes: Vec<String>,
}

impl Report {
    fn record(&mut self, name: &str, result: Result<String>) {
        match result {
            Ok(detail) => {
                println!("PASS  {name}: {detail}");
                self.passed.push(name.to_owned());
            }
            Err(e) => {
                println!("FAIL  {name}: {e:#}");
                self.failed.push(name.to_owned());
            }
        }
    }

    /// A probe: Ok(true) means S3-like, Ok(false) a gap of this server.
    fn probe(&mut self, name: &str, result: Result<(bool, String)>) {
        let line = match result {
            Ok((true, detail)) => format!("ok    {name}: {detail}"),
            Ok((false, detail)) => format!("GAP   {name}: {detail}"),
            Err(e) => format!("GAP   {name}: probe error: {e:#}"),
        };
        println!("NOTE  {line}");
        self.notes.push(line);
    }
}

async fn create_bucket(cfg: &Config) -> Result<()> {
    let (status, body) = cfg.raw("PUT", &cfg.bucket, Vec::new(), None).await?;
    match status {
        200 => println!("created bucket {}", cfg.bucket),
        409 if body.contains("BucketAlreadyOwnedByYou") || body.contains("BucketAlreadyExists") => {
            println!("bucket {} already exists", cfg.bucket)
        }
        _ => bail!("PUT /{} answered {status}: {body}", cfg.bucket),
    }
    Ok(())
}

fn expect_not_found<T: std::fmt::Debug>(what: &str, r: object_store::Result<T>) -> Result<()> {
    match r {
        Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => bail!("{what}: expected NotFound, got error {e}"),
        Ok(v) => bail!("{what}: expected NotFound, got {v:?}"),
    }
}

async fn check(cfg: &Config) -> Result<bool> {
    let store = cfg.store()?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let run = Path::from(format!("s3-smoke/{nanos}"));
    let key = |name: &str| Path::from(format!("{run}/{name}"));
    let mut report = Report::default();
    let started = Instant::now();
    println!(
        "s3-smoke: endpoint {} bucket {} region {} prefix {run}",
        cfg.endpoint, cfg.bucket, cfg.region
    );

    // Is the bucket there at all? Everything else depends on it.
    store
        .put(
            &key("hello.txt"),
            PutPayload::from_static(b"hello, caisson"),
        )
        .await
        .context("first put with the right credentials failed (does the bucket exist?)")?;

    // (1) SigV4 authentication.
    let r = async {
        let mut seen = Vec::new();
        let wrong_secret = cfg.rejected_store(&cfg.access_key_id, "not-the-secret", false)?;
        let cases = [
            ("wrong secret", wrong_secret),
            (
                "unknown access key",
                cfg.rejected_store("nobody", &cfg.secret_access_key, false)?,
            ),
            (
                "unsigned request",
                cfg.rejected_store(&cfg.access_key_id, "", true)?,
            ),
        ];
        for (case, bad) in cases {
            let path = key(&format!("auth/{}", case.replace(' ', "-")));
            match bad
                .put(&path, PutPayload::from_static(b"should not land"))
                .await
            {
                Ok(_) => {
                    bail!("!!! SERVER DOES NOT VERIFY SIGV4: a put with {case} was ACCEPTED !!!")
                }
                Err(e) => seen.push(format!("{case} put -> {}", short(&e))),
            }
            expect_not_found(&format!("object put with {case}"), store.head(&path).await)?;
            match bad.get(&key("hello.txt")).await {
                Ok(_) => {
                    bail!("!!! SERVER DOES NOT VERIFY SIGV4: a get with {case} was ACCEPTED !!!")
                }
                Err(e) => seen.push(format!("{case} get -> {}", short(&e))),
            }
        }
        Ok(format!("rejected: {}", seen.join("; ")))
    }
    .await;
    report.record("1 sigv4 auth rejects bad credentials", r);

    // (2) put/get round trip.
    let r = async {
        let data = pattern(100_000, 2);
        let path = key("roundtrip.bin");
        let put = store.put(&path, PutPayload::from(data.clone())).await?;
        let got = store.get(&path).await?;
        ensure!(
            got.meta.size == data.len() as u64,
            "meta size {} != {}",
            got.meta.size,
            data.len()
        );
        let bytes = got.bytes().await?;
        ensure!(
            bytes.as_ref() == data.as_slice(),
            "body differs ({} bytes back)",
            bytes.len()
        );
        let empty = key("empty");
        store.put(&empty, PutPayload::new()).await?;
        ensure!(
            store.get(&empty).await?.bytes().await?.is_empty(),
            "empty object not empty"
        );
        Ok(format!(
            "100000 bytes and an empty object, etag {:?}",
            put.e_tag
        ))
    }
    .await;
    report.record("2 put/get round trip", r);

    // (3) multipart upload, 5 MiB parts.
    let big = pattern(12 * MIB, 3);
    let big_path = key("multipart.bin");
    let r = async {
        let mut upload = store.put_multipart(&big_path).await?;
        let mut parts = 0;
        for chunk in big.chunks(5 * MIB) {
            upload.put_part(PutPayload::from(chunk.to_vec())).await?;
            parts += 1;
        }
        let done = upload.complete().await?;
        let back = store.get(&big_path).await?.bytes().await?;
        ensure!(back.len() == big.len(), "read back {} bytes, wrote {}", back.len(), big.len());
        ensure!(back.as_ref() == big.as_slice(), "multipart object differs from what was written");

        // An aborted upload leaves no object.
        let aborted = key("multipart-aborted.bin");
        let mut upload = store.put_multipart(&aborted).await?;
        upload.put_part(PutPayload::from(pattern(5 * MIB, 4))).await?;
        upload.abort().await?;
        expect_not_found("aborted multipart upload", store.head(&aborted).await)?;
        Ok(format!(
            "12 MiB in {parts} parts (5+5+2 MiB) read back byte-identical, etag {:?}; abort leaves nothing",
            done.e_tag
        ))
    }
    .await;
    report.record("3 multipart upload", r);

    // (4) list v2 with pagination.
    let list_prefix = key("list");
    let list_key = |i: usize| Path::from(format!("{list_prefix}/obj-{i:05}"));
    let r = async {
        let t = Instant::now();
        futures::stream::iter(0..LIST_OBJECTS)
            .map(|i| {
                let store = &store;
                async move { store.put(&list_key(i), PutPayload::from(i.to_string())).await }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?;
        let put_time = t.elapsed();

        // One raw page: the server must truncate at 1000 and hand out a token.
        let query = format!("{}?list-type=2&prefix={list_prefix}/", cfg.bucket);
        let (status, page) = cfg.raw("GET", &query, Vec::new(), None).await?;
        ensure!(status == 200, "raw list-objects-v2 answered {status}: {page}");
        let truncated = xml_tag(&page, "IsTruncated");
        let count = xml_tag(&page, "KeyCount");
        let token = xml_tag(&page, "NextContinuationToken");
        ensure!(
            truncated == Some("true") && count == Some("1000") && token.is_some_and(|t| !t.is_empty()),
            "first page of {LIST_OBJECTS} keys: IsTruncated {truncated:?}, KeyCount {count:?}, \
             NextContinuationToken {token:?} (want true, 1000, a token)"
        );

        let mut listed: Vec<Path> =
            store.list(Some(&list_prefix)).map_ok(|m| m.location).try_collect().await?;
        ensure!(listed.len() == LIST_OBJECTS, "list found {} objects, want {LIST_OBJECTS}", listed.len());
        listed.sort();
        let want: Vec<Path> = (0..LIST_OBJECTS).map(list_key).collect();
        ensure!(listed == want, "list returned the wrong keys");

        let offset = list_key(999);
        let after: Vec<Path> = store
            .list_with_offset(Some(&list_prefix), &offset)
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        let mut after_sorted = after.clone();
        after_sorted.sort();
        ensure!(
            after_sorted == want[1000..],
            "list_with_offset after obj-00999 gave {} keys, want {} (obj-01000..obj-01499)",
            after.len(),
            LIST_OBJECTS - 1000
        );

        let tree = store.list_with_delimiter(Some(&run)).await?;
        ensure!(
            tree.common_prefixes.contains(&list_prefix),
            "list_with_delimiter did not show {list_prefix} as a common prefix: {:?}",
            tree.common_prefixes
        );
        ensure!(
            tree.objects.iter().any(|m| m.location == key("hello.txt")),
            "list_with_delimiter did not show hello.txt"
        );
        Ok(format!(
            "put {LIST_OBJECTS} objects in {:.1}s; first raw page truncated at 1000 with a continuation \
             token; list() found all {LIST_OBJECTS}; list_with_offset found the last 500; \
             list_with_delimiter shows {} prefixes, {} objects",
            put_time.as_secs_f64(),
            tree.common_prefixes.len(),
            tree.objects.len()
        ))
    }
    .await;
    report.record("4 list v2 pagination", r);

    // (5) range gets.
    let r = async {
        let ranges: [Range<u64>; 4] = [
            0..1,
            100..4_196,
            (5 * MIB as u64 - 10)..(5 * MIB as u64 + 10), // across a part boundary
            (12 * MIB as u64 - 7)..(12 * MIB as u64),     // the last bytes
        ];
        for range in &ranges {
            let got = store.get_range(&big_path, range.clone()).await?;
            let want = &big[range.start as usize..range.end as usize];
            ensure!(
                got.as_ref() == want,
                "get_range {range:?} gave {} wrong bytes",
                got.len()
            );
        }
        let many = store.get_ranges(&big_path, &ranges).await?;
        for (range, got) in ranges.iter().zip(&many) {
            ensure!(
                got.as_ref() == &big[range.start as usize..range.end as usize],
                "get_ranges {range:?} differs"
            );
        }
        Ok(format!(
            "{} ranges exact (incl. across a part boundary and the tail), get_ranges too",
            ranges.len()
        ))
    }
    .await;
    report.record("5 range get", r);

    // (6) head, copy, delete, NotFound.
    let r = async {
        let src = key("roundtrip.bin");
        let meta = store.head(&src).await?;
        ensure!(meta.size == 100_000, "head size {} != 100000", meta.size);
        let dst = key("copy/of-roundtrip.bin");
        store.copy(&src, &dst).await?;
        let copied = store.get(&dst).await?.bytes().await?;
        ensure!(copied.as_ref() == pattern(100_000, 2).as_slice(), "copy differs from source");
        store.delete(&dst).await?;
        expect_not_found("get after delete", store.get(&dst).await.map(|_| ()))?;
        expect_not_found("head after delete", store.head(&dst).await)?;
        expect_not_found("get of a missing key", store.get(&key("no/such/key")).await.map(|_| ()))?;
        expect_not_found(
            "get_range of a missing key",
            store.get_range(&key("no/such/key"), 0..1).await,
        )?;
        let delete_missing = match store.delete(&key("no/such/key")).await {
            Ok(()) => "delete of a missing key is Ok (as S3)".to_owned(),
            Err(object_store::Error::NotFound { .. }) => "delete of a missing key is NotFound".to_owned(),
            Err(e) => bail!("delete of a missing key: {e}"),
        };
        Ok(format!(
            "head size {} modified {}; copy identical; deleted object and missing key give NotFound; {delete_missing}",
            meta.size, meta.last_modified
        ))
    }
    .await;
    report.record("6 head/copy/delete/NotFound", r);

    // Probes: S3 behaviour beyond what the runtime relies on.
    let probe = async {
        // A signature over a body hash that does not match the body sent.
        let path = format!("{}/{run}/probe/forged-digest", cfg.bucket);
        let (status, body) = cfg
            .raw("PUT", &path, b"actual body".to_vec(), Some(&[0u8; 32]))
            .await?;
        let landed = store.head(&key("probe/forged-digest")).await.is_ok();
        Ok((
            status >= 400 && !landed,
            format!(
                "PUT whose x-amz-content-sha256 does not match its body -> {status} {}",
                error_code(&body)
            ),
        ))
    }
    .await;
    report.probe("payload hash (x-amz-content-sha256) verified", probe);

    let probe = async {
        let path = key("probe/small-parts.bin");
        let mut upload = store.put_multipart(&path).await?;
        upload.put_part(PutPayload::from(vec![1u8; 1024])).await?;
        upload.put_part(PutPayload::from(vec![2u8; 1024])).await?;
        match upload.complete().await {
            Ok(_) => Ok((
                false,
                "a multipart upload with a 1 KiB non-last part was accepted (S3: EntityTooSmall)"
                    .into(),
            )),
            Err(e) => {
                // The parts stay on the server until the upload is aborted.
                let aborted = upload.abort().await.is_ok();
                Ok((
                    true,
                    format!(
                        "1 KiB non-last part rejected: {} (aborted: {aborted})",
                        short(&e)
                    ),
                ))
            }
        }
    }
    .await;
    report.probe("multipart minimum part size (5 MiB) enforced", probe);

    let probe = async {
        let path = key("probe/create-once");
        store
            .put_opts(&path, PutPayload::from_static(b"1"), PutMode::Create.into())
            .await?;
        match store
            .put_opts(&path, PutPayload::from_static(b"2"), PutMode::Create.into())
            .await
        {
            Err(object_store::Error::AlreadyExists { .. }) => {
                Ok((true, "second create -> AlreadyExists".into()))
            }
            Err(e) => Ok((false, format!("second create -> {}", short(&e)))),
            Ok(_) => Ok((
                false,
                "second PutMode::Create (If-None-Match: *) overwrote the object".into(),
            )),
        }
    }
    .await;
    report.probe("conditional put (If-None-Match: *)", probe);

    let probe = async {
        // S3 keys are flat: "k" and "k/child" can both be objects.
        let parent = key("probe/nest");
        let child = key("probe/nest/child");
        store
            .put(&parent, PutPayload::from_static(b"parent"))
            .await?;
        match store.put(&child, PutPayload::from_static(b"child")).await {
            Ok(_) => {
                let both = store.get(&parent).await?.bytes().await?.as_ref() == b"parent"
                    && store.get(&child).await?.bytes().await?.as_ref() == b"child";
                Ok((
                    both,
                    format!(
                        "objects `nest` and `nest/child` side by side: {}",
                        if both { "both readable" } else { "one is lost" }
                    ),
                ))
            }
            Err(e) => Ok((
                false,
                format!(
                    "put of `nest/child` while object `nest` exists -> {}",
                    detail(&e)
                ),
            )),
        }
    }
    .await;
    report.probe("a key that is also a prefix of another key", probe);

    let probe = async {
        let long = key(&format!("probe/{}", "k".repeat(600)));
        match store.put(&long, PutPayload::from_static(b"long")).await {
            Ok(_) => Ok((
                store.get(&long).await?.bytes().await?.as_ref() == b"long",
                "600-byte key name round trips".into(),
            )),
            Err(e) => Ok((
                false,
                format!("put with a 600-byte key name -> {}", detail(&e)),
            )),
        }
    }
    .await;
    report.probe("long key (S3 allows 1024 bytes)", probe);

    let probe = async {
        let odd = key("probe/odd chars ü+=&@,;$.txt");
        store.put(&odd, PutPayload::from_static(b"odd")).await?;
        let back = store.get(&odd).await?.bytes().await?;
        let listed: Vec<Path> = store
            .list(Some(&key("probe")))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        let ok = back.as_ref() == b"odd" && listed.contains(&odd);
        Ok((
            ok,
            format!(
                "key `{odd}`: get {}, listed {}",
                back.as_ref() == b"odd",
                listed.contains(&odd)
            ),
        ))
    }
    .await;
    report.probe("keys with spaces and non-ASCII", probe);

    // (7) cleanup with the bulk DeleteObjects call, then nothing is left.
    let r = async {
        let all = store.list(Some(&run)).map_ok(|m| m.location).boxed();
        let deleted: Vec<Path> = store.delete_stream(all).try_collect().await?;
        let left: Vec<_> = store.list(Some(&run)).try_collect().await?;
        ensure!(left.is_empty(), "{} objects left under {run}", left.len());
        Ok(format!(
            "bulk-deleted {} objects; prefix empty",
            deleted.len()
        ))
    }
    .await;
    report.record("7 bulk delete (cleanup)", r);

    println!(
        "s3-smoke summary: {} of {} required checks passed, {} failed, {} probes noted, {:.1}s",
        report.passed.len(),
        report.passed.len() + report.failed.len(),
        report.failed.len(),
        report.notes.len(),
        started.elapsed().as_secs_f64()
    );
    if !report.failed.is_empty() {
        println!("failed: {}", report.failed.join(", "));
    }
    Ok(report.failed.is_empty())
}

fn short(e: &object_store::Error) -> String {
    let kind = match e {
        object_store::Error::NotFound { .. } => "NotFound",
        object_store::Error::PermissionDenied { .. } => "PermissionDenied",
        object_store::Error::Unauthenticated { .. } => "Unauthenticated",
        object_store::Error::AlreadyExists { .. } => "AlreadyExists",
        object_store::Error::Precondition { .. } => "Precondition",
        object_store::Error::NotImplemented => "NotImplemented",
        _ => "Error",
    };
    let text = e.to_string();
    let code = error_code(&text);
    if code.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} ({code})")
    }
}

/// [`short`] plus the start of the message, for a gap worth reading about.
fn detail(e: &object_store::Error) -> String {
    let text: String = e.to_string().chars().take(240).collect();
    format!("{}: {text}", short(e))
}

/// The `<Code>` of an S3 error document, if the text holds one.
fn error_code(text: &str) -> String {
    xml_tag(text, "Code").unwrap_or("").to_owned()
}

#[tokio::main]
async fn main() -> Result<()> {
    let command = std::env::args().nth(1).unwrap_or_default();
    let cfg = Config::from_env()?;
    match command.as_str() {
        "create-bucket" => create_bucket(&cfg).await,
        "check" => {
            if check(&cfg).await? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        _ => bail!("usage: s3-smoke create-bucket|check"),
    }
}
