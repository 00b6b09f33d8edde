import Foundation
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A whole file mapped read-only into memory (private copy-on-write pages, so nothing writes it back).
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: Int
    /// Start of the mapping (nil for an empty file).
    public let bytes: UnsafeRawPointer?

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw EncoreError(.io, "\(path): cannot open (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw EncoreError(.io, "\(path): cannot stat") }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw EncoreError(.io, "\(path): is a directory, expected a file") }
        size = Int(st.st_size)
        if size == 0 {
            bytes = nil
            return
        }
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw EncoreError(.io, "\(path): cannot map \(size) bytes (\(String(cString: strerror(errno))))")
        }
        bytes = UnsafeRawPointer(p)
    }

    deinit {
        if let bytes { munmap(UnsafeMutableRawPointer(mutating: bytes), size) }
    }

    /// Drops the resident pages wholly inside `range` (a part of this mapping) from the process: after a
    /// tensor was copied out (e.g. regrouped), its mapped bytes stop counting in RSS. Reading them again
    /// faults the file's bytes back in (nothing was written to these private pages).
    func releasePages(_ range: UnsafeRawBufferPointer) {
        guard let base = range.baseAddress, range.count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (Int(bitPattern: base) + page - 1) / page * page
        let end = (Int(bitPattern: base) + range.count) / page * page
        if end > start { _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, Int32(MADV_DONTNEED)) }
    }

    /// Reads a little-endian UInt64 at `offset` (caller checks bounds).
    func loadUInt64LE(at offset: Int) -> UInt64 {
        UInt64(littleEndian: bytes!.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
}

/// Writes files so that a crash never leaves a half-written one: temp file in the same folder, fsync,
/// rename over the destination, fsync the folder.
public enum AtomicFile {
    public static func write(_ data: Data, to path: String) throws {
        try write(to: path) { fd in
            try data.withUnsafeBytes { raw in
                try writeAll(fd, raw.baseAddress, raw.count, path: path)
            }
        }
    }

    /// Calls `body` with a file descriptor open on a temp file, then commits it atomically to `path`.
    public static func write(to path: String, body: (Int32) throws -> Void) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let tmp = dir + "/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw EncoreError(.io, "\(tmp): cannot create (\(String(cString: strerror(errno))))") }
        do {
            try body(fd)
            guard fsync(fd) == 0 else { throw EncoreError(.io, "\(tmp): fsync failed") }
            close(fd)
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        guard rename(tmp, path) == 0 else {
            let msg = String(cString: strerror(errno))
            unlink(tmp)
            throw EncoreError(.io, "\(path): cannot rename temp file into place (\(msg))")
        }
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    static func writeAll(_ fd: Int32, _ p: UnsafeRawPointer?, _ count: Int, path: String) throws {
        guard var p, count > 0 else { return }
        var left = count
        while left > 0 {
            let n = Foundation.write(fd, p, left)
            if n < 0 {
                if errno == EINTR { continue }
                throw EncoreError(.io, "\(path): write failed (\(String(cString: strerror(errno))))")
            }
            left -= n
            p += n
        }
    }
}
