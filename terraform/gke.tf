# The GKE cluster: zonal (one zone that offers T4s), VPC-native, private nodes, Workload
# Identity, a release channel for upgrades, Dataplane V2 (network policy), Shielded nodes,
# and two autoscaled node pools that both scale from zero: CPU and T4.
resource "google_container_cluster" "ppd" {
  # checkov:skip=CKV_GCP_12: Dataplane V2 (datapath_provider below) enforces NetworkPolicy; the network_policy block is for Calico and must stay unset with it
  # checkov:skip=CKV_GCP_69: the default node pool is removed; both node pools set workload_metadata_config GKE_METADATA
  # checkov:skip=CKV_GCP_65: Google Groups for RBAC needs a Workspace domain; CI is bound by e-mail to a namespaced Role (k8s/namespace.yaml)
  name     = var.cluster_name
  location = var.zone

  network         = google_compute_network.vpc.id
  subnetwork      = google_compute_subnetwork.nodes.id
  networking_mode = "VPC_NATIVE"
  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  # Node pools are managed below; the default pool only exists while the cluster is created.
  remove_default_node_pool = true
  initial_node_count       = 1

  release_channel {
    channel = var.release_channel
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  private_cluster_config {
    enable_private_nodes    = true  # nodes have no public IPs
    enable_private_endpoint = false # the IP endpoint stays, limited to master_authorized_cidrs
    master_ipv4_cidr_block  = "172.16.0.0/28"
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_cidrs
      content {
        cidr_block   = cidr_blocks.value
        display_name = "operator ${cidr_blocks.value}"
      }
    }
  }

  # The DNS endpoint is authorised by IAM, not by source address: GitHub Actions (changing
  # IPs) reach the control plane through it with their Workload Identity Federation token.
  control_plane_endpoints_config {
    dns_endpoint_config {
      allow_external_traffic = true
    }
  }

  datapath_provider           = "ADVANCED_DATAPATH" # Dataplane V2: enforces NetworkPolicy
  enable_intranode_visibility = true
  enable_shielded_nodes       = true

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE" # the policy of binauthz.tf
  }

  addons_config {
    http_load_balancing {
      disabled = false # GKE Ingress (k8s/ingress.yaml)
    }
    gce_persistent_disk_csi_driver_config {
      enabled = true # MLflow's disk
    }
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
    managed_prometheus {
      enabled = false # kube-prometheus-stack scrapes Ray (docs/deploy.md)
    }
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  resource_labels     = var.labels
  deletion_protection = var.deletion_protection

  depends_on = [google_project_service.enabled, google_binary_authorization_policy.ppd]
}

locals {
  node_config_common = {
    image_type   = "COS_CONTAINERD"
    disk_type    = "pd-balanced"
    oauth_scopes = ["https://www.googleapis.com/auth/cloud-platform"] # IAM decides, not scopes
  }
}

resource "google_container_node_pool" "cpu" {
  name     = "cpu-pool" # named in the k8s/ manifests' node selectors
  cluster  = google_container_cluster.ppd.id
  location = var.zone

  initial_node_count = 1 # system pods need a node while the cluster comes up
  autoscaling {
    total_min_node_count = var.cpu_min_nodes
    total_max_node_count = var.cpu_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  # Node upgrades add a new node before draining an old one, one at a time, and the drain
  # respects k8s/policies.yaml's budget: one serving CPU worker down at most, never both.
  upgrade_settings {
    strategy        = "SURGE"
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.cpu_machine_type
    image_type      = local.node_config_common.image_type
    disk_type       = local.node_config_common.disk_type
    disk_size_gb    = 100
    oauth_scopes    = local.node_config_common.oauth_scopes
    service_account = google_service_account.nodes.email
    labels          = var.labels

    workload_metadata_config {
      mode = "GKE_METADATA" # pods get their own identity, never the node's
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    metadata = {
      disable-legacy-endpoints = "true"
    }
  }

  lifecycle {
    ignore_changes = [initial_node_count]
  }
}

resource "google_container_node_pool" "t4" {
  name     = "t4-pool"
  cluster  = google_container_cluster.ppd.id
  location = var.zone

  initial_node_count = 0
  autoscaling {
    total_min_node_count = 0 # no T4 is paid for while nothing asks for a GPU
    total_max_node_count = var.t4_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.t4_machine_type
    image_type      = local.node_config_common.image_type
    disk_type       = local.node_config_common.disk_type
    disk_size_gb    = 200 # the GPU image with torch and CUDA libraries is large
    oauth_scopes    = local.node_config_common.oauth_scopes
    service_account = google_service_account.nodes.email
    spot            = var.t4_spot
    labels          = var.labels

    guest_accelerator {
      type  = "nvidia-tesla-t4"
      count = 1
      gpu_driver_installation_config {
        gpu_driver_version = var.gpu_driver_version
      }
    }

    # GKE also adds the nvidia.com/gpu=present:NoSchedule taint to GPU nodes; the Ray GPU
    # pods tolerate it and select cloud.google.com/gke-accelerator: nvidia-tesla-t4.

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    metadata = {
      disable-legacy-endpoints = "true"
    }
  }
}
