"""Where synthetic drives happen: one city per country of the paper's data (UK, US, Germany).

Drive origins are drawn uniformly within ``LAT_SPAN``/``LON_SPAN`` degrees of the centre; the
packaged default validation geofences (``gaia2/data/geofences.geojson``) cover part of each box.
"""

REGIONS = {
    # country: (name, centre latitude, centre longitude)
    "GB": ("london", 51.5074, -0.1278),
    "US": ("san_francisco", 37.7749, -122.4194),
    "DE": ("munich", 48.1351, 11.5820),
}
LAT_SPAN = 0.04   # origins in [lat - 0.04, lat + 0.04]
LON_SPAN = 0.06   # origins in [lon - 0.06, lon + 0.06]
