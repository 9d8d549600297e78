//! Multipart upload from a local file, multipart copy between buckets, and the registry
//! that aborts every upload s3mirror started when it fails or is interrupted.
//!
//! Invariants: an upload is registered from CreateMultipartUpload until it is completed
//! or aborted, so none is left behind; parts are read from the file by offset and never
//! buffered whole, so memory does not grow with the part size.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumType, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::journal::{Journal, Recorded};
use super::metadata::{
    content_type_for, copy_source, format_mtime, ObjectHeaders, MD5_METADATA, MTIME_METADATA,
    PART_SIZE_METADATA,
};
use super::objects::{changed_while_reading, Download};
use super::{describe_sdk_error, S3Store};
use crate::location::S3Url;
use crate::storage::checksum::{b64, digest, HashKind};
use crate::storage::local::{DigestRequest, Digests};
use crate::storage::{local, Checksum, ChecksumAlgorithm, ETag, Entry, ObjectError, StreamCheck};

pub const MAX_PARTS: u64 = 10_000;
pub const MIN_PART_SIZE: u64 = 5 << 20;
const READ_BUFFER: usize = 256 * 1024;
/// The checksum that protects the parts of an upload when no algorithm is configured:
/// CRC32C costs a fraction of an MD5, and as a whole-object CRC it lets the server verify
/// the assembled object too.
const DEFAULT_PART_CHECKSUM: ChecksumAlgorithm = ChecksumAlgorithm::Crc32c;
/// The largest object CopyObject copies in one request.
pub const MAX_COPY_OBJECT: u64 = 5 << 30;

/// A multipart copy of one object: `size` bytes in parts of `part_size`, made to end
/// with `checksum` (the source's) when checksums are on.
struct MultipartCopy<'a> {
    source: &'a S3Url,
    key: &'a str,
    size: u64,
    part_size: u64,
    checksum: Option<Checksum>,
}

/// How objects are split into parts, and the global cap on part requests in flight.
#[derive(Debug, Clone)]
pub struct PartSettings {
    pub part_size: u64,
    /// Parts of one object in flight at once.
    pub concurrency: usize,
    /// Shared by every object: bounds part requests in the process.
    pub permits: Arc<Semaphore>,
    /// Shared by every object: MiB of parts held in memory (copies through this
    /// machine), `BUFFER_BUDGET_MIB` in all.
    pub buffers: Arc<Semaphore>,
}

/// Memory for parts held whole in memory, across all objects.
pub const BUFFER_BUDGET_MIB: usize = 256;

/// The part size for an object: the requested one, grown (to whole MiB) so the object
/// needs no more than 10,000 parts.
pub fn part_size_for(size: u64, requested: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    requested.max(needed)
}

/// (part number, offset, length) of each part.
pub fn part_ranges(size: u64, part_size: u64) -> impl Iterator<Item = (i32, u64, u64)> {
    let count = size.div_ceil(part_size).max(1);
    (0..count).map(move |i| {
        let offset = i * part_size;
        (i as i32 + 1, offset, part_size.min(size - offset))
    })
}

pub(super) struct ActiveUpload {
    pub(super) client: Client,
    pub(super) recorded: Recorded,
}

/// Every multipart upload started and not yet completed or aborted.
#[derive(Default)]
pub struct ActiveUploads {
    /// Where uploads are recorded until they end, for runs after a crash.
    journal: Option<Journal>,
    next: AtomicU64,
    uploads: Mutex<HashMap<u64, ActiveUpload>>,
    /// Set by `abort_all`: no upload is started after it.
    closed: AtomicBool,
    /// CreateMultipartUpload requests in flight, not yet registered.
    creating: AtomicUsize,
}

/// A CreateMultipartUpload in flight; `abort_all` waits for it to be registered.
pub(super) struct Creating<'a>(&'a AtomicUsize);

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An upload in the registry, aborted by `abort_all` until it completes.
struct Registered {
    id: u64,
    upload_id: String,
}

impl ActiveUploads {
    pub fn with_journal(journal: Journal) -> Self {
        Self {
            journal: Some(journal),
            ..Self::default()
        }
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    pub(super) fn begin_create(&self) -> Option<Creating<'_>> {
        self.creating.fetch_add(1, Ordering::SeqCst);
        let creating = Creating(&self.creating);
        (!self.closed.load(Ordering::SeqCst)).then_some(creating)
    }

    pub(super) fn register(&self, upload: ActiveUpload) -> u64 {
        if let Some(journal) = &self.journal {
            if let Err(err) = journal.started(&upload.recorded) {
                journal_failed(journal, &err);
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.uploads
            .lock()
            .expect("uploads lock")
            .insert(id, upload);
        id
    }

    /// Takes an upload out of the registry.
    fn take(&self, id: u64) -> Option<ActiveUpload> {
        self.uploads.lock().expect("uploads lock").remove(&id)
    }

    /// Takes the upload with this id out of the registry and records that it ended, for
    /// callers that hold the upload id rather than the registry's number.
    pub(super) fn ended_by_id(&self, upload_id: &str) {
        self.uploads
            .lock()
            .expect("uploads lock")
            .retain(|_, u| u.recorded.upload_id != upload_id);
        self.ended(upload_id);
    }

    /// Records that an upload ended: completed, or aborted.
    fn ended(&self, upload_id: &str) {
        if let Some(journal) = &self.journal {
            if let Err(err) = journal.finished(upload_id) {
                journal_failed(journal, &err);
            }
        }
    }

    /// Aborts an upload; it is recorded as ended once the server has let it go.
    async fn abort(&self, upload: &ActiveUpload) {
        if abort(&upload.client, &upload.recorded).await {
            self.ended(&upload.recorded.upload_id);
        }
    }

    /// Stops new uploads, waits (up to 30 s) for those being created to be registered,
    /// and aborts every registered upload; returns how many were aborted.
    pub async fn abort_all(&self) -> usize {
        self.closed.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.creating.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let uploads: Vec<ActiveUpload> = self
            .uploads
            .lock()
            .expect("uploads lock")
            .drain()
            .map(|(_, u)| u)
            .collect();
        let count = uploads.len();
        futures::future::join_all(uploads.iter().map(|u| self.abort(u))).await;
        count
    }
}

/// Warns once that uploads cannot be recorded; the run goes on without the record.
fn journal_failed(journal: &Journal, err: &std::io::Error) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "cannot record multipart uploads in {}: {err}; if this run is killed, a later \
             run cannot abort its incomplete uploads (set --state-dir)",
            journal.dir().display()
        );
    }
}

/// AbortMultipartUpload; true once the upload is gone (aborted now or before).
pub(super) async fn abort(client: &Client, upload: &Recorded) -> bool {
    let result = client
        .abort_multipart_upload()
        .bucket(&upload.bucket)
        .key(&upload.key)
        .upload_id(&upload.upload_id)
        .send()
        .await;
    match result {
        Ok(_) => true,
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_no_such_upload()) =>
        {
            true
        }
        Err(err) => {
            tracing::warn!(
                "AbortMultipartUpload s3://{}/{}: {}; list incomplete uploads to remove it",
                upload.bucket,
                upload.key,
                describe_sdk_error(&err)
            );
            false
        }
    }
}

/// One part to upload: where it is in the file and what the server must verify.
struct FilePart {
    number: i32,
    offset: u64,
    len: u64,
    checksum: Checksum,
}

/// One UploadPart request: the part's bytes and what the server is to verify them with.
struct PartRequest {
    number: i32,
    len: u64,
    body: ByteStream,
    content_md5: Option<String>,
    checksum: Option<Checksum>,
}

/// One part cut from a stream, held in memory under its share of the buffer budget.
struct BufferedPart {
    number: i32,
    data: Vec<u8>,
    _memory: OwnedSemaphorePermit,
}

/// The additional checksums of a multipart upload: one per part, and the object's
/// (whole-object for CRCs, composite otherwise).
struct UploadChecksums {
    parts: Vec<Checksum>,
    object: Checksum,
}

impl UploadChecksums {
    fn new(algorithm: ChecksumAlgorithm, digests: &Digests) -> Self {
        let part_digests = &digests.parts[0];
        Self {
            parts: part_digests
                .iter()
                .map(|d| Checksum::full(algorithm, d))
                .collect(),
            object: if algorithm.is_crc() {
                Checksum::full(algorithm, &digests.whole)
            } else {
                Checksum::composite(algorithm, part_digests)
            },
        }
    }
}

impl S3Store {
    /// Uploads a local file in parts. The file is hashed first, in one pass: its whole
    /// MD5 goes into the metadata (`md5chksum`), and each part is sent with its checksum
    /// (CRC32C unless another algorithm is configured) for the server to verify; for a
    /// CRC the upload is `FULL_OBJECT`, so the server also verifies the whole object's,
    /// and the stated checksum is checked against the one computed here.
    pub async fn put_file_multipart(
        &self,
        key: &str,
        path: &Path,
        source: &Entry,
        parts: &PartSettings,
    ) -> Result<(), ObjectError> {
        let part_size = part_size_for(source.size, parts.part_size);
        let algorithm = self.write.checksum.unwrap_or(DEFAULT_PART_CHECKSUM);
        let requests = vec![
            DigestRequest {
                kind: HashKind::Md5,
                part_sizes: Vec::new(),
            },
            DigestRequest {
                kind: HashKind::Checksum(algorithm),
                part_sizes: vec![part_size],
            },
        ];
        let digests = local::file_digests(path.to_path_buf(), requests)
            .await
            .map_err(|err| ObjectError::new("read", path.display().to_string(), err))?;
        if digests.len != source.size {
            return Err(changed_while_reading(path));
        }
        let checksums = UploadChecksums::new(algorithm, &digests.digests[1]);
        let create = self
            .client
            .create_multipart_upload()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .content_type(content_type_for(key))
            .metadata(MTIME_METADATA, format_mtime(source.mtime))
            .metadata(MD5_METADATA, b64(&digests.digests[0].whole))
            .metadata(PART_SIZE_METADATA, part_size.to_string());
        let create = with_checksum_algorithm(create, Some(&checksums.object));
        let registered = self.create_upload(key, create).await?;
        let upload_id = registered.upload_id.clone();

        let upload = async {
            let completed = futures::stream::iter(part_ranges(source.size, part_size))
                .map(|(number, offset, len)| {
                    let part = FilePart {
                        number,
                        offset,
                        len,
                        checksum: checksums.parts[number as usize - 1].clone(),
                    };
                    self.upload_part(key, &upload_id, path, part, &parts.permits)
                })
                .buffered(parts.concurrency)
                .try_collect::<Vec<_>>()
                .await?;
            if file_changed(path, source).await {
                return Err(changed_while_reading(path));
            }
            let object = Some(&checksums.object);
            let whole = object.filter(|c| c.parts.is_none());
            let (_, stated) = self.complete(key, &upload_id, completed, whole).await?;
            self.confirm_checksum("CompleteMultipartUpload", key, object, stated)
        };
        self.run_registered(registered, upload).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        part: FilePart,
        permits: &Semaphore,
    ) -> Result<CompletedPart, ObjectError> {
        let _permit = permits
            .acquire()
            .await
            .expect("part permits are never closed");
        let number = part.number;
        let body = ByteStream::read_from()
            .path(path)
            .offset(part.offset)
            .length(Length::Exact(part.len))
            .buffer_size(READ_BUFFER)
            .build()
            .await
            .map_err(|err| ObjectError::new("read", path.display().to_string(), err))?;
        let request = PartRequest {
            number,
            len: part.len,
            body,
            content_md5: None,
            checksum: Some(part.checksum),
        };
        self.send_part(key, upload_id, request).await
    }

    /// Sends one UploadPart and returns the part as completed. The part carries what the
    /// server verifies (Content-MD5, an additional checksum), so its payload is not also
    /// hashed with SHA-256 for the signature.
    async fn send_part(
        &self,
        key: &str,
        upload_id: &str,
        part: PartRequest,
    ) -> Result<CompletedPart, ObjectError> {
        let number = part.number;
        let request = self
            .client
            .upload_part()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .upload_id(upload_id)
            .part_number(number)
            .content_length(part.len as i64)
            .set_content_md5(part.content_md5)
            .body(part.body);
        let out = with_checksum!(request, part.checksum.as_ref())
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|err| {
                ObjectError::new(
                    "UploadPart",
                    format!("{} part {number}", self.describe(key)),
                    describe_sdk_error(&err),
                )
            })?;
        let completed = CompletedPart::builder().part_number(number);
        let completed = with_checksum!(completed, part.checksum.as_ref());
        Ok(completed.set_e_tag(out.e_tag).build())
    }

    /// Uploads an object being read from another bucket in parts, cut from the stream one
    /// part at a time. A part's buffer is taken only with permits from the global buffer
    /// budget, so memory stays within it whatever the objects' sizes and count. Headers, metadata and (with
    /// checksums on) the source's whole-object CRC travel along; the server verifies the
    /// CRC of the whole and the MD5 and checksum of each part.
    pub async fn put_download_multipart(
        &self,
        key: &str,
        download: Download,
        parts: &PartSettings,
    ) -> Result<(), ObjectError> {
        let Download {
            body,
            size,
            source,
            headers,
            checksum,
            expected,
            ..
        } = download;
        let checksum = self.carried_checksum(key, checksum)?;
        let part_size = part_size_for(size, parts.part_size);
        let registered = self
            .create_copy_upload(key, headers, checksum.as_ref())
            .await?;
        let upload_id = registered.upload_id.clone();
        let algorithm = checksum.as_ref().map(|c| c.algorithm);
        let upload = async {
            let reader = body.into_async_read();
            let check = StreamCheck::new(&expected, true);
            let buffer_mib = (part_size.div_ceil(1 << 20) as usize).min(BUFFER_BUDGET_MIB) as u32;
            // Parts are cut in order, so the source's ETag or checksum is checked as they
            // are; a mismatch or a short body ends the stream with an error before
            // anything is completed.
            let chunks = futures::stream::try_unfold(
                (reader, 1, Some(check), 0u64),
                |(mut reader, number, mut check, read)| {
                    let buffers = Arc::clone(&parts.buffers);
                    async move {
                        let memory = buffers
                            .acquire_many_owned(buffer_mib)
                            .await
                            .expect("buffer permits are never closed");
                        let mut data = Vec::with_capacity(part_size as usize);
                        (&mut reader).take(part_size).read_to_end(&mut data).await?;
                        let read = read + data.len() as u64;
                        if data.is_empty() {
                            if read != size {
                                let why = format!("received {read} bytes where {size} were listed");
                                return Err(std::io::Error::other(why));
                            }
                            if let Some(Err(why)) = check.take().and_then(StreamCheck::finish) {
                                return Err(std::io::Error::other(why));
                            }
                            return Ok(None);
                        }
                        if let Some(check) = &mut check {
                            check.update(&data);
                        }
                        let part = BufferedPart {
                            number,
                            data,
                            _memory: memory,
                        };
                        Ok(Some((part, (reader, number + 1, check, read))))
                    }
                },
            );
            let read_error =
                |err: std::io::Error| ObjectError::transient("GetObject", source.clone(), err);
            let completed = chunks
                .map_err(read_error)
                .map_ok(|part| self.upload_buffer(key, &upload_id, part, algorithm, &parts.permits))
                .try_buffered(parts.concurrency)
                .try_collect::<Vec<_>>()
                .await?;
            let (_, stated) = self
                .complete(key, &upload_id, completed, checksum.as_ref())
                .await?;
            self.confirm_checksum("CompleteMultipartUpload", key, checksum.as_ref(), stated)
        };
        self.run_registered(registered, upload).await
    }

    /// Whether a copy through this machine may go in parts: not when checksums are on
    /// and the source's is a whole-object SHA, which only a single PutObject reproduces.
    pub fn can_stream_in_parts(&self, download: &Download) -> bool {
        match (&self.write.checksum, &download.checksum) {
            (Some(_), Some(c)) => {
                c.algorithm.is_crc() || c.parts.is_some() || download.size > MAX_COPY_OBJECT
            }
            _ => true,
        }
    }

    /// Uploads one part held in memory, with its Content-MD5 and, for an upload with a
    /// checksum algorithm, its checksum; the buffer's permit is released once it is sent.
    async fn upload_buffer(
        &self,
        key: &str,
        upload_id: &str,
        part: BufferedPart,
        algorithm: Option<ChecksumAlgorithm>,
        permits: &Semaphore,
    ) -> Result<CompletedPart, ObjectError> {
        let _permit = permits
            .acquire()
            .await
            .expect("part permits are never closed");
        let BufferedPart { number, data, .. } = part;
        let len = data.len() as u64;
        let request = PartRequest {
            number,
            len,
            content_md5: Some(b64(&digest(HashKind::Md5, &data))),
            checksum: algorithm.map(|a| Checksum::full(a, &digest(HashKind::Checksum(a), &data))),
            body: ByteStream::from(data),
        };
        self.send_part(key, upload_id, request).await
    }

    /// Copies an object from another location reachable with this store's client,
    /// server-side: CopyObject, or UploadPartCopy above `multipart_threshold`. With
    /// checksums on, the copy is made so that its checksum equals the source's: the same
    /// algorithm, and for a composite checksum the source's part layout.
    pub async fn copy_object_from(
        &self,
        source: &S3Url,
        key: &str,
        size: u64,
        multipart_threshold: u64,
        parts: &PartSettings,
    ) -> Result<(), ObjectError> {
        let checksums = self.write.checksum.is_some();
        if size <= multipart_threshold && !checksums {
            return self.copy_from(source, key, None).await;
        }
        let head = self.head(source, key, None).await?;
        let checksum = checksum_from!(&head).filter(|_| checksums);
        let part_size = match &checksum {
            Some(c) if c.parts.is_some() => {
                Some(self.source_part_size(source, key, size, c).await?)
            }
            // A whole-object SHA cannot be rebuilt from parts; CopyObject keeps it.
            Some(c) if !c.algorithm.is_crc() && size <= MAX_COPY_OBJECT => None,
            _ if size > multipart_threshold => Some(part_size_for(size, parts.part_size)),
            _ => None,
        };
        match part_size {
            None => {
                let algorithm = checksum.map(|c| c.algorithm).or(self.write.checksum);
                self.copy_from(source, key, algorithm).await
            }
            Some(part_size) => {
                let copy = MultipartCopy {
                    source,
                    key,
                    size,
                    part_size,
                    checksum,
                };
                self.copy_multipart_from(copy, &head, parts).await
            }
        }
    }

    /// The part size of a composite-checksum source, from the length of its first part.
    async fn source_part_size(
        &self,
        source: &S3Url,
        key: &str,
        size: u64,
        checksum: &Checksum,
    ) -> Result<u64, ObjectError> {
        let first = self.head(source, key, Some(1)).await?;
        let part_size = first.content_length().unwrap_or(0).max(0) as u64;
        let parts = u64::from(checksum.parts.unwrap_or(1));
        if part_size > 0 && size.div_ceil(part_size) == parts {
            return Ok(part_size);
        }
        Err(ObjectError::new(
            "HeadObject",
            format!("s3://{}/{}", source.bucket(), source.full_key(key)),
            format!(
                "its {parts} parts are not of equal size, so a copy cannot reproduce its \
                 composite checksum ({checksum}); compare it with --compare etag"
            ),
        ))
    }

    /// UploadPartCopy of every part, carrying over the content headers and metadata that
    /// a multipart copy does not carry itself, then the tags.
    async fn copy_multipart_from(
        &self,
        copy: MultipartCopy<'_>,
        head: &HeadObjectOutput,
        parts: &PartSettings,
    ) -> Result<(), ObjectError> {
        let MultipartCopy {
            source,
            key,
            size,
            part_size,
            checksum,
        } = copy;
        let headers = ObjectHeaders::from_head(head);
        let registered = self
            .create_copy_upload(key, headers, checksum.as_ref())
            .await?;
        let upload_id = registered.upload_id.clone();
        let copy_source = copy_source(source, key);
        let upload = async {
            let completed = futures::stream::iter(part_ranges(size, part_size))
                .map(|(number, offset, len)| {
                    let range = format!("bytes={offset}-{}", offset + len - 1);
                    self.upload_part_copy(
                        key,
                        &upload_id,
                        &copy_source,
                        number,
                        range,
                        &parts.permits,
                    )
                })
                .buffered(parts.concurrency)
                .try_collect::<Vec<_>>()
                .await?;
            let whole = checksum.as_ref().filter(|c| c.parts.is_none());
            let (_, stated) = self.complete(key, &upload_id, completed, whole).await?;
            self.confirm_checksum("CompleteMultipartUpload", key, checksum.as_ref(), stated)
        };
        self.run_registered(registered, upload).await?;
        self.copy_tags(source, key).await
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        copy_source: &str,
        number: i32,
        range: String,
        permits: &Semaphore,
    ) -> Result<CompletedPart, ObjectError> {
        let _permit = permits
            .acquire()
            .await
            .expect("part permits are never closed");
        let out = self
            .client
            .upload_part_copy()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(copy_source)
            .copy_source_range(range)
            .send()
            .await
            .map_err(|err| {
                ObjectError::new(
                    "UploadPartCopy",
                    format!("{} part {number}", self.describe(key)),
                    describe_sdk_error(&err),
                )
            })?;
        let result = out.copy_part_result;
        let checksum = result.as_ref().and_then(|r| checksum_from!(r));
        let completed = CompletedPart::builder()
            .part_number(number)
            .set_e_tag(result.and_then(|r| r.e_tag));
        Ok(with_checksum!(completed, checksum.as_ref()).build())
    }
    /// Starts an upload that carries another object's content headers and metadata, and
    /// is to end with `checksum`.
    async fn create_copy_upload(
        &self,
        key: &str,
        headers: ObjectHeaders,
        checksum: Option<&Checksum>,
    ) -> Result<Registered, ObjectError> {
        let create = headers.apply_to_create(
            self.client
                .create_multipart_upload()
                .bucket(self.url.bucket())
                .key(self.url.full_key(key)),
        );
        self.create_upload(key, with_checksum_algorithm(create, checksum))
            .await
    }

    /// Sends CreateMultipartUpload with the run's write options and registers the upload,
    /// so that from its creation on, a failure or an interruption aborts it.
    async fn create_upload(
        &self,
        key: &str,
        create: CreateMultipartUploadFluentBuilder,
    ) -> Result<Registered, ObjectError> {
        let failed =
            |cause: String| ObjectError::new("CreateMultipartUpload", self.describe(key), cause);
        let Some(_creating) = self.uploads.begin_create() else {
            return Err(failed("the run is being interrupted".to_owned()));
        };
        let out = with_write_options!(create, self.write)
            .send()
            .await
            .map_err(|err| failed(describe_sdk_error(&err)))?;
        let upload_id = out.upload_id.unwrap_or_default();
        let id = self.uploads.register(ActiveUpload {
            client: self.client.clone(),
            recorded: Recorded {
                endpoint: self.endpoint.clone(),
                bucket: self.url.bucket().to_owned(),
                upload_id: upload_id.clone(),
                key: self.url.full_key(key),
            },
        });
        Ok(Registered { id, upload_id })
    }

    /// Completes an upload; `whole` is the whole-object checksum of a `FULL_OBJECT`
    /// upload, for the server to verify. Returns the ETag and checksum the server states.
    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        whole: Option<&Checksum>,
    ) -> Result<(Option<ETag>, Option<Checksum>), ObjectError> {
        let request = self
            .client
            .complete_multipart_upload()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .set_checksum_type(whole.map(|_| ChecksumType::FullObject));
        let out = with_checksum!(request, whole).send().await.map_err(|err| {
            ObjectError::new(
                "CompleteMultipartUpload",
                self.describe(key),
                describe_sdk_error(&err),
            )
        })?;
        Ok((out.e_tag().map(ETag::parse), checksum_from!(&out)))
    }

    /// Runs the body of a registered upload, and aborts the upload on failure.
    async fn run_registered(
        &self,
        upload: Registered,
        body: impl std::future::Future<Output = Result<(), ObjectError>>,
    ) -> Result<(), ObjectError> {
        let result = body.await;
        // Taken by `abort_all` if the run was interrupted meanwhile.
        if let Some(registered) = self.uploads.take(upload.id) {
            match &result {
                Ok(()) => self.uploads.ended(&upload.upload_id),
                Err(_) => self.uploads.abort(&registered).await,
            }
        }
        result
    }

    /// Copies object tags where the server supports tagging; warns once where it does not.
    async fn copy_tags(&self, source: &S3Url, key: &str) -> Result<(), ObjectError> {
        static UNSUPPORTED_WARNED: AtomicBool = AtomicBool::new(false);
        let tags = match self
            .client
            .get_object_tagging()
            .bucket(source.bucket())
            .key(source.full_key(key))
            .send()
            .await
        {
            Ok(out) => out.tag_set,
            Err(err)
                if err
                    .as_service_error()
                    .and_then(|e| aws_sdk_s3::error::ProvideErrorMetadata::code(e))
                    == Some("NotImplemented") =>
            {
                if !UNSUPPORTED_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the source server does not support object tagging; tags are not copied"
                    );
                }
                return Ok(());
            }
            Err(err) => {
                return Err(ObjectError::new(
                    "GetObjectTagging",
                    format!("s3://{}/{}", source.bucket(), source.full_key(key)),
                    describe_sdk_error(&err),
                ))
            }
        };
        if tags.is_empty() {
            return Ok(());
        }
        let tagging = aws_sdk_s3::types::Tagging::builder()
            .set_tag_set(Some(tags))
            .build()
            .map_err(|err| ObjectError::new("PutObjectTagging", self.describe(key), err))?;
        self.client
            .put_object_tagging()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .tagging(tagging)
            .send()
            .await
            .map_err(|err| {
                ObjectError::new(
                    "PutObjectTagging",
                    self.describe(key),
                    describe_sdk_error(&err),
                )
            })?;
        Ok(())
    }
}

/// Sets the checksum algorithm and type of a new upload made to end with `checksum`.
fn with_checksum_algorithm(
    create: CreateMultipartUploadFluentBuilder,
    checksum: Option<&Checksum>,
) -> CreateMultipartUploadFluentBuilder {
    match checksum {
        None => create,
        Some(c) => create
            .checksum_algorithm(c.algorithm.sdk())
            .checksum_type(match c.parts {
                Some(_) => ChecksumType::Composite,
                None => ChecksumType::FullObject,
            }),
    }
}

async fn file_changed(path: &Path, listed: &Entry) -> bool {
    match tokio::fs::metadata(path).await {
        Ok(meta) => meta.len() != listed.size || meta.modified().ok() != Some(listed.mtime),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn abort_all_waits_for_uploads_being_created_and_refuses_new_ones() {
        let uploads = Arc::new(ActiveUploads::default());
        let creating = uploads.begin_create().expect("open before abort_all");
        let aborting = tokio::spawn({
            let uploads = Arc::clone(&uploads);
            async move { uploads.abort_all().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !aborting.is_finished(),
            "abort_all must wait for the creation"
        );
        assert!(
            uploads.begin_create().is_none(),
            "no upload starts once closed"
        );
        drop(creating);
        assert_eq!(aborting.await.unwrap(), 0);
    }

    #[test]
    fn part_size_grows_to_fit_ten_thousand_parts() {
        assert_eq!(part_size_for(1 << 30, 16 << 20), 16 << 20);
        let huge = 5u64 << 40; // 5 TiB
        let grown = part_size_for(huge, 16 << 20);
        assert!(huge.div_ceil(grown) <= MAX_PARTS);
        assert_eq!(grown % (1 << 20), 0);
    }

    #[test]
    fn ranges_cover_the_object_exactly() {
        let ranges: Vec<_> = part_ranges(12, 5).collect();
        assert_eq!(ranges, vec![(1, 0, 5), (2, 5, 5), (3, 10, 2)]);
        assert_eq!(part_ranges(10, 5).count(), 2);
    }
}
