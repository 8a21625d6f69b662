//! The size of an executable as a device would store it: stripped of its symbol table and debug
//! information. Read from the ELF section headers, so a binary built with symbols is measured as
//! `strip` would leave it, without running `strip`.

use std::path::Path;

/// What a binary weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinarySize {
    /// The file's size, bytes.
    pub file_bytes: u64,
    /// The size once symbols and debug information are stripped, bytes (the file's size when
    /// it is already stripped, or when it is not an ELF file).
    pub stripped_bytes: u64,
    /// Whether the file still has a symbol table or debug sections.
    pub has_symbols: bool,
}

/// Measures the file at `path`, reading only its ELF headers and section names (a measuring
/// process does not grow by the size of what it measures).
pub fn size(path: &Path) -> std::io::Result<BinarySize> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let file_bytes = file.metadata()?.len();
    let removable = strippable_bytes(|at, len| {
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, at).ok()?;
        Some(buf)
    });
    Ok(measured(file_bytes, removable))
}

/// Measures an executable's bytes.
pub fn size_of(bytes: &[u8]) -> BinarySize {
    let removable = strippable_bytes(|at, len| {
        let start = usize::try_from(at).ok()?;
        bytes.get(start..start.checked_add(len)?).map(<[u8]>::to_vec)
    });
    measured(bytes.len() as u64, removable)
}

fn measured(file_bytes: u64, removable: Option<u64>) -> BinarySize {
    let removable = removable.unwrap_or(0);
    BinarySize { file_bytes, stripped_bytes: file_bytes.saturating_sub(removable), has_symbols: removable > 0 }
}

/// The longest section name read.
const MAX_NAME: usize = 64;

/// Bytes of the sections `strip` removes (`.symtab`, `.strtab`, `.debug_*`) in a 64-bit
/// little-endian ELF file read through `read_at(offset, len)`; `None` when it is not one or
/// its headers are out of bounds.
fn strippable_bytes(read_at: impl Fn(u64, usize) -> Option<Vec<u8>>) -> Option<u64> {
    let header = read_at(0, 64)?;
    if header.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |b: &[u8], at: usize| Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |b: &[u8], at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |b: &[u8], at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
    let shoff = u64_at(&header, 0x28)?;
    let entsize = usize::from(u16_at(&header, 0x3a)?);
    let (count, names) = (usize::from(u16_at(&header, 0x3c)?), usize::from(u16_at(&header, 0x3e)?));
    if entsize < 64 {
        return None;
    }
    let table = read_at(shoff, count.checked_mul(entsize)?)?;
    let entry = |i: usize| table.get(i.checked_mul(entsize)?..(i + 1).checked_mul(entsize)?);
    let name_table = u64_at(entry(names)?, 24)?;
    let mut total = 0u64;
    for i in 0..count {
        let h = entry(i)?;
        let name_at = name_table.checked_add(u64::from(u32_at(h, 0)?))?;
        // A name near the end of the file is read as far as the file goes.
        let name = (1..=MAX_NAME).rev().find_map(|len| read_at(name_at, len))?;
        let name = name.split(|&b| b == 0).next()?;
        // SHT_NOBITS (8) occupies no bytes in the file.
        if u32_at(h, 4)? != 8 && (name == b".symtab" || name == b".strtab" || name.starts_with(b".debug_")) {
            total += u64_at(h, 32)?;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 file: a header and the given sections (name, type, size), contents zero.
    fn elf(sections: &[(&str, u32, u64)]) -> Vec<u8> {
        let mut names = vec![0u8];
        let mut name_offsets = Vec::new();
        for (name, _, _) in sections {
            name_offsets.push(names.len() as u32);
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let shstrtab_name = names.len() as u32;
        names.extend_from_slice(b".shstrtab\0");
        let data_start = 64u64;
        let mut offset = data_start;
        let mut headers = Vec::new();
        let mut body = Vec::new();
        for ((_, kind, len), name) in sections.iter().zip(&name_offsets) {
            headers.push((*name, *kind, offset, *len));
            if *kind != 8 {
                body.extend(std::iter::repeat_n(0u8, *len as usize));
                offset += len;
            }
        }
        headers.push((shstrtab_name, 3, offset, names.len() as u64));
        body.extend_from_slice(&names);
        let shoff = data_start + body.len() as u64;
        let mut out = vec![0u8; 64];
        out[..6].copy_from_slice(b"\x7fELF\x02\x01");
        out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        out[0x3e..0x40].copy_from_slice(&((headers.len() - 1) as u16).to_le_bytes());
        out.extend_from_slice(&body);
        for (name, kind, off, len) in headers {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&h);
        }
        out
    }

    #[test]
    fn symbols_and_debug_sections_are_what_stripping_removes() {
        let bytes = elf(&[(".text", 1, 1000), (".symtab", 2, 300), (".strtab", 3, 200), (".debug_info", 1, 50)]);
        let s = size_of(&bytes);
        assert_eq!(s.file_bytes, bytes.len() as u64);
        assert_eq!(s.file_bytes - s.stripped_bytes, 550);
        assert!(s.has_symbols);
    }

    #[test]
    fn a_stripped_file_and_nobits_sections_weigh_what_the_file_does() {
        let bytes = elf(&[(".text", 1, 1000), (".bss", 8, 5000), (".dynsym", 11, 40)]);
        let s = size_of(&bytes);
        assert_eq!((s.stripped_bytes, s.has_symbols), (bytes.len() as u64, false));
    }

    #[test]
    fn bytes_that_are_not_elf_or_are_cut_short_are_measured_as_they_are() {
        assert_eq!(size_of(b"#!/bin/sh\n"), BinarySize { file_bytes: 10, stripped_bytes: 10, has_symbols: false });
        let cut = &elf(&[(".symtab", 2, 300)])[..100];
        assert_eq!(size_of(cut).stripped_bytes, 100);
    }

    #[test]
    fn this_test_binary_is_measured() {
        let s = size(&std::env::current_exe().unwrap()).unwrap();
        assert!(s.stripped_bytes > 0 && s.stripped_bytes <= s.file_bytes);
    }
}
