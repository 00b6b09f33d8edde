import Foundation

/// A small SVG line chart (log₂ x axis), enough for the paper's Figure-1-style plot of time against input
/// length, with no dependency.
public struct SVGLineChart {
    public struct Series {
        public var name: String
        public var color: String
        public var dashed: Bool
        public var points: [(x: Double, y: Double)]
        public init(name: String, color: String, dashed: Bool = false, points: [(x: Double, y: Double)]) {
            self.name = name
            self.color = color
            self.dashed = dashed
            self.points = points
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]

    public init(title: String, xLabel: String, yLabel: String, series: [Series]) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    public func render(width: Double = 720, height: Double = 440) -> String {
        let left = 70.0, right = 240.0, top = 40.0, bottom = 55.0
        let pw = width - left - right, ph = height - top - bottom
        let xs = series.flatMap { $0.points.map(\.x) }.filter { $0 > 0 }
        let ys = series.flatMap { $0.points.map(\.y) }
        let x0 = log2(xs.min() ?? 1), x1 = max(log2(xs.max() ?? 2), x0 + 1)
        let yMax = niceCeiling(ys.max() ?? 1)
        func px(_ x: Double) -> Double { left + (log2(x) - x0) / (x1 - x0) * pw }
        func py(_ y: Double) -> Double { top + ph - y / yMax * ph }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(left)" y="22" text-anchor="start" font-size="14" font-weight="bold">\(Self.escape(title))</text>

        """
        for i in 0...5 {
            let y = yMax * Double(i) / 5
            svg += "<line x1=\"\(left)\" y1=\"\(py(y))\" x2=\"\(left + pw)\" y2=\"\(py(y))\" stroke=\"#e5e5e5\"/>\n"
            svg += "<text x=\"\(left - 8)\" y=\"\(py(y) + 4)\" text-anchor=\"end\">\(String(format: yMax < 10 ? "%.2f" : "%.0f", y))</text>\n"
        }
        for x in Set(xs).sorted() {
            svg += "<line x1=\"\(px(x))\" y1=\"\(top)\" x2=\"\(px(x))\" y2=\"\(top + ph)\" stroke=\"#f0f0f0\"/>\n"
            svg += "<text x=\"\(px(x))\" y=\"\(top + ph + 18)\" text-anchor=\"middle\">\(Int(x))</text>\n"
        }
        svg += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(pw)\" height=\"\(ph)\" fill=\"none\" stroke=\"#333\"/>\n"
        svg += "<text x=\"\(left + pw / 2)\" y=\"\(height - 12)\" text-anchor=\"middle\">\(Self.escape(xLabel))</text>\n"
        svg += "<text transform=\"translate(18 \(top + ph / 2)) rotate(-90)\" text-anchor=\"middle\">\(Self.escape(yLabel))</text>\n"
        for (i, s) in series.enumerated() {
            let pts = s.points.filter { $0.x > 0 }.sorted { $0.x < $1.x }
            let path = pts.map { "\(px($0.x)),\(py($0.y))" }.joined(separator: " ")
            svg += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2.5\"\(s.dashed ? " stroke-dasharray=\"6 4\"" : "")/>\n"
            for p in pts { svg += "<circle cx=\"\(px(p.x))\" cy=\"\(py(p.y))\" r=\"3.5\" fill=\"\(s.color)\"/>\n" }
            let ly = top + 14 + Double(i) * 22
            svg += "<line x1=\"\(left + pw + 14)\" y1=\"\(ly)\" x2=\"\(left + pw + 44)\" y2=\"\(ly)\" stroke=\"\(s.color)\" stroke-width=\"2.5\"\(s.dashed ? " stroke-dasharray=\"6 4\"" : "")/>\n"
            svg += "<text x=\"\(left + pw + 50)\" y=\"\(ly + 4)\">\(Self.escape(s.name))</text>\n"
        }
        svg += "</svg>\n"
        return svg
    }

    func niceCeiling(_ v: Double) -> Double {
        guard v > 0 else { return 1 }
        let e = pow(10, floor(log10(v)))
        for m in [1.0, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10] where m * e >= v { return m * e }
        return 10 * e
    }
}
