"""Five Safes RO-Crates (https://w3id.org/5s-crate/0.5, the TRE-FX profile's current
draft): a job request as a crate (`request`), a released result as a crate (`result`),
both packed as a BagIt bag in a ZIP (`bag`)."""
