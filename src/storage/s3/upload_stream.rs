//! Multipart upload of an object being read from another bucket (a copy through this
//! machine): parts are cut from the stream one at a time, each held in memory only under
//! its share of the global buffer budget, so memory stays within the budget whatever the
//! objects' sizes and count.

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedPart;
use futures::TryStreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::objects::Download;
use super::parts::{part_size_for, PartSettings, BUFFER_BUDGET_MIB, MAX_COPY_OBJECT};
use super::upload_steps::PartRequest;
use super::S3Store;
use crate::storage::checksum::{b64, digest, HashKind};
use crate::storage::{Checksum, ChecksumAlgorithm, ObjectError, StreamCheck};

/// One part cut from a stream, held in memory under its share of the buffer budget.
struct BufferedPart {
    number: i32,
    data: Vec<u8>,
    _memory: OwnedSemaphorePermit,
}

impl S3Store {
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
            let check = StreamCheck::new(&expected);
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
}
