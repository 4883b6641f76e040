"""Local tracking and monitoring beside a local deployment: `make observe` (`observe.stack`)."""
