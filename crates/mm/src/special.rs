//! Mappings a device driver installs in a process (Linux's `remap_pfn_range` and
//! `dma_mmap_coherent` behind a driver's mmap): device registers ([`IoMemory`], e.g. a
//! queue's doorbell page or a work-queue portal) and driver-owned RAM ([`FrameRegion`],
//! e.g. a queue's ring memory that the device also reaches by DMA).
//!
//! Both can be revoked when the device goes away: the driver zaps the mapping
//! ([`crate::Mm::zap`]) and later CPU accesses fail with [`crate::Error::Bus`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use sva_physmem::{Pa, Ram};

/// Why a device register access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// Nothing answers at the offset (the device was removed, or the offset is outside
    /// what it decodes): SIGBUS for the process.
    #[error("no device answers at offset {0:#x}")]
    Bus(u64),
    /// The register does not support this kind of access (e.g. ENQCMD to a register that
    /// only takes posted writes).
    #[error("unsupported access at offset {0:#x}")]
    Unsupported(u64),
}

/// Device registers mapped into a process. Offsets are from the start of the region.
pub trait IoMemory: Send + Sync {
    /// Size of the region in bytes (a multiple of the page size when mapped).
    fn size(&self) -> u64;

    /// A load of `buf.len()` bytes.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoError>;

    /// A posted store of `data`.
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), IoError>;

    /// A non-posted 64-byte store (ENQCMD): returns whether the device accepted it
    /// (`false` = retry, the ZF = 1 of the instruction). `pasid` is the PASID of the
    /// storing process (the IA32_PASID of its thread), `None` if it has none.
    fn enqueue(
        &self,
        offset: u64,
        data: &[u8; 64],
        pasid: Option<sva_addr::Pasid>,
    ) -> Result<bool, IoError> {
        let _ = (data, pasid);
        Err(IoError::Unsupported(offset))
    }
}

/// Driver-owned frames mapped into processes, page `i` of every mapping to `frames[i]`.
/// Holds one reference on each frame; each mapped page holds another.
pub struct FrameRegion {
    ram: Arc<Ram>,
    frames: Vec<Pa>,
    revoked: AtomicBool,
}

impl core::fmt::Debug for FrameRegion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameRegion")
            .field("pages", &self.frames.len())
            .field("revoked", &self.is_revoked())
            .finish()
    }
}

impl FrameRegion {
    /// Allocates `pages` zeroed frames of `page_size` bytes.
    pub fn new(ram: Arc<Ram>, pages: usize, page_size: u64) -> sva_physmem::Result<Self> {
        let mut frames = Vec::with_capacity(pages);
        for _ in 0..pages {
            match ram.alloc(page_size) {
                Ok(pa) => frames.push(pa),
                Err(e) => {
                    for pa in frames {
                        let _ = ram.put(pa);
                    }
                    return Err(e);
                }
            }
        }
        Ok(Self {
            ram,
            frames,
            revoked: AtomicBool::new(false),
        })
    }

    /// The RAM the frames belong to.
    pub(crate) fn ram(&self) -> &Arc<Ram> {
        &self.ram
    }

    /// The frames, in page order.
    pub fn frames(&self) -> &[Pa] {
        &self.frames
    }

    /// Marks the region gone: pages not mapped yet can no longer be faulted in (the
    /// driver zaps existing mappings itself).
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    /// Whether [`FrameRegion::revoke`] was called.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

impl Drop for FrameRegion {
    fn drop(&mut self) {
        for &pa in &self.frames {
            let _ = self.ram.put(pa);
        }
    }
}
