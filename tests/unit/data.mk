EXTRA_DIST += tests/unit/data/full.yml
EXTRA_DIST += tests/unit/data/seed-kong-declarative.yml
