import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The standard `process_*` metrics Prometheus client libraries export, read from `/proc/self` at each
/// scrape: resident and virtual memory, open and maximum file descriptors, CPU time and start time. Memory
/// and descriptors are what an operator watches for a leak (a client that costs more than itself); the
/// reads are of procfs, answered from kernel memory without touching a disk.
struct ProcessMetrics: Equatable {
    var residentBytes: Double = 0
    var virtualBytes: Double = 0
    var openDescriptors: Double = 0
    var maxDescriptors: Double = 0
    var cpuSeconds: Double = 0
    var startTimeSeconds: Double = 0

    static func read() -> ProcessMetrics {
        var m = ProcessMetrics()
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        if let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
            let fields = statm.split(separator: " ")
            if fields.count >= 2 {
                m.virtualBytes = (Double(fields[0]) ?? 0) * page
                m.residentBytes = (Double(fields[1]) ?? 0) * page
            }
        }
        m.openDescriptors = Double((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0)
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { m.maxDescriptors = Double(limit.rlim_cur) }
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        {
            // Fields after the command name (which may hold spaces): state is field 3; utime 14, stime 15,
            // starttime 22 (in clock ticks since boot).
            let rest = stat[stat.index(after: close)...].split(separator: " ")
            func field(_ n: Int) -> Double { rest.count > n - 3 ? Double(rest[n - 3]) ?? 0 : 0 }
            m.cpuSeconds = (field(14) + field(15)) / ticks
            m.startTimeSeconds = bootTime() + field(22) / ticks
        }
        return m
    }

    private static func bootTime() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("btime ") })
        else { return 0 }
        return Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces)) ?? 0
    }

    var prometheusText: String {
        func metric(_ name: String, _ type: String, _ help: String, _ value: Double) -> String {
            let shown = value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
            return "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(shown)\n"
        }
        return metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", residentBytes)
            + metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", virtualBytes)
            + metric("process_open_fds", "gauge", "Number of open file descriptors.", openDescriptors)
            + metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", maxDescriptors)
            + metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", cpuSeconds)
            + metric("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", startTimeSeconds)
    }
}
