//! A zip archive holding one file, written by hand (local header, data,
//! central directory, end record; deflate and CRC-32 from flate2) rather
//! than with another dependency. No zip64: a file or archive of 4 GiB or
//! more is refused.

use std::io::Write;

use chrono::{DateTime, Datelike, Timelike, Utc};
use flate2::{Compression, Crc, write::DeflateEncoder};

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
/// 2.0: deflate.
const VERSION: u16 = 20;
/// Bit 11: the name is UTF-8.
const UTF8_NAME: u16 = 0x0800;
const DEFLATE: u16 = 8;

/// An MS-DOS time and date (2-second resolution, 1980 to 2107).
fn dos_time(at: DateTime<Utc>) -> (u16, u16) {
    if !(1980..=2107).contains(&at.year()) {
        // 1980-01-01 00:00:00, the earliest a zip can say.
        return (0, (1 << 5) | 1);
    }
    // Each part fits its bits: the year offset is below 128, hours below 24...
    let time = (at.hour() << 11) | (at.minute() << 5) | (at.second() / 2);
    let date = ((at.year() as u32 - 1980) << 9) | (at.month() << 5) | at.day();
    (time as u16, date as u16)
}

fn too_large() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "the file is too large for a zip without zip64",
    )
}

/// A zip archive with one deflated file `name` holding `content`.
pub fn single_file(name: &str, modified: DateTime<Utc>, content: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut crc = Crc::new();
    crc.update(content);
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(content)?;
    let compressed = encoder.finish()?;
    let size = u32::try_from(content.len()).map_err(|_| too_large())?;
    let compressed_size = u32::try_from(compressed.len()).map_err(|_| too_large())?;
    let name_length = u16::try_from(name.len()).map_err(|_| too_large())?;
    let (time, date) = dos_time(modified);

    // The fields the local and the central headers share, from "version
    // needed" to "extra field length".
    let mut common = Vec::with_capacity(26);
    for half in [VERSION, UTF8_NAME, DEFLATE, time, date] {
        common.extend_from_slice(&half.to_le_bytes());
    }
    for word in [crc.sum(), compressed_size, size] {
        common.extend_from_slice(&word.to_le_bytes());
    }
    common.extend_from_slice(&name_length.to_le_bytes());
    common.extend_from_slice(&0u16.to_le_bytes());

    let mut archive = Vec::with_capacity(compressed.len() + 2 * name.len() + 128);
    archive.extend_from_slice(&LOCAL_HEADER.to_le_bytes());
    archive.extend_from_slice(&common);
    archive.extend_from_slice(name.as_bytes());
    archive.extend_from_slice(&compressed);

    let directory_offset = u32::try_from(archive.len()).map_err(|_| too_large())?;
    archive.extend_from_slice(&CENTRAL_HEADER.to_le_bytes());
    archive.extend_from_slice(&VERSION.to_le_bytes()); // made by: MS-DOS, 2.0
    archive.extend_from_slice(&common);
    // Comment length, disk number, internal attributes.
    for half in [0u16, 0, 0] {
        archive.extend_from_slice(&half.to_le_bytes());
    }
    // External attributes, then the local header's offset.
    for word in [0u32, 0] {
        archive.extend_from_slice(&word.to_le_bytes());
    }
    archive.extend_from_slice(name.as_bytes());
    let directory_size = u32::try_from(archive.len()).map_err(|_| too_large())? - directory_offset;

    archive.extend_from_slice(&END_OF_CENTRAL_DIRECTORY.to_le_bytes());
    // This disk, the directory's disk, entries on this disk, entries in all.
    for half in [0u16, 0, 1, 1] {
        archive.extend_from_slice(&half.to_le_bytes());
    }
    archive.extend_from_slice(&directory_size.to_le_bytes());
    archive.extend_from_slice(&directory_offset.to_le_bytes());
    archive.extend_from_slice(&0u16.to_le_bytes()); // comment length
    Ok(archive)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }

    #[test]
    fn the_archive_holds_the_deflated_file_its_crc_and_a_directory_pointing_at_it() {
        let content = b"{\"step\":\"claim\"}\n".repeat(50);
        let at = "2026-11-22T08:30:14Z".parse().expect("a time");
        let archive = single_file("session-1.jsonl", at, &content).expect("zips");
        assert_eq!(u32_at(&archive, 0), LOCAL_HEADER);
        let compressed_size = u32_at(&archive, 18) as usize;
        assert_eq!(u32_at(&archive, 22) as usize, content.len());
        let name = &archive[30..30 + "session-1.jsonl".len()];
        assert_eq!(name, b"session-1.jsonl");
        let data = &archive[30 + name.len()..30 + name.len() + compressed_size];
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(data)
            .read_to_end(&mut inflated)
            .expect("inflates");
        assert_eq!(inflated, content);
        let mut crc = Crc::new();
        crc.update(&content);
        assert_eq!(u32_at(&archive, 14), crc.sum());
        let end = archive.len() - 22;
        assert_eq!(u32_at(&archive, end), END_OF_CENTRAL_DIRECTORY);
        let directory = u32_at(&archive, end + 16) as usize;
        assert_eq!(u32_at(&archive, directory), CENTRAL_HEADER);
        assert_eq!(directory, 30 + name.len() + compressed_size);
    }

    #[test]
    fn times_before_1980_become_the_earliest_a_zip_can_say() {
        let early = "1970-01-01T00:00:00Z".parse().expect("a time");
        assert_eq!(dos_time(early), (0, 33));
        let later = "2026-11-22T08:30:14Z".parse().expect("a time");
        assert_eq!(dos_time(later), ((8 << 11) | (30 << 5) | 7, (46 << 9) | (11 << 5) | 22));
    }
}
