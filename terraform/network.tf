# A VPC for the cluster: one subnet with secondary ranges for pods and services (VPC-native),
# Private Google Access (private nodes reach GCS and Artifact Registry without public IPs) and
# Cloud NAT (for images from public registries, e.g. the KubeRay operator's on quay.io).
resource "google_compute_network" "vpc" {
  name                    = "ppd"
  auto_create_subnetworks = false

  depends_on = [google_project_service.enabled]
}

resource "google_compute_subnetwork" "nodes" {
  name                     = "ppd-nodes"
  region                   = var.region
  network                  = google_compute_network.vpc.id
  ip_cidr_range            = "10.10.0.0/20"
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = "10.20.0.0/14"
  }

  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = "10.30.0.0/20"
  }

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.1
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "nat" {
  name    = "ppd-nat"
  region  = var.region
  network = google_compute_network.vpc.id
}

resource "google_compute_router_nat" "nat" {
  name                               = "ppd-nat"
  router                             = google_compute_router.nat.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Ingress to the nodes: only Google's load-balancer health checkers and front ends, to the
# Ray Serve port (GKE adds the rules its own components need); everything else is denied.
resource "google_compute_firewall" "allow_lb" {
  name          = "ppd-allow-lb-to-serve"
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  priority      = 1000
  source_ranges = ["130.211.0.0/22", "35.191.0.0/16"] # Google front ends and health checks

  allow {
    protocol = "tcp"
    ports    = ["8000"]
  }

  log_config {
    metadata = "EXCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "deny_ingress" {
  name          = "ppd-deny-all-ingress"
  network       = google_compute_network.vpc.id
  direction     = "INGRESS"
  priority      = 65534
  source_ranges = ["0.0.0.0/0"]

  deny {
    protocol = "all"
  }

  log_config {
    metadata = "EXCLUDE_ALL_METADATA"
  }
}

# The public HTTPS endpoint's address, named in k8s/ingress.yaml.
resource "google_compute_global_address" "ingress" {
  name = "ppd-ip"

  depends_on = [google_project_service.enabled]
}
