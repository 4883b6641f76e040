variable "project_id" {
  description = "ID of the (empty) GCP project everything is created in."
  type        = string
}

variable "region" {
  description = "Region of the bucket, the registry, the network and the static IP's users."
  type        = string
  default     = "us-central1"
}

variable "zone" {
  description = "Zone of the (zonal) GKE cluster and its node pools; it must offer nvidia-tesla-t4."
  type        = string
  default     = "us-central1-a"
}

variable "cluster_name" {
  description = "Name of the GKE cluster."
  type        = string
  default     = "ppd"
}

variable "release_channel" {
  description = "GKE release channel: RAPID, REGULAR or STABLE."
  type        = string
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "master_authorized_cidrs" {
  description = "CIDR blocks allowed to reach the control plane's IP endpoint (e.g. your workstation's IP/32). CI uses the DNS endpoint with IAM instead."
  type        = list(string)
  default     = []
}

variable "cpu_machine_type" {
  description = "Machine type of the CPU node pool (Ray head, CPU workers, MLflow, system pods)."
  type        = string
  default     = "n2-standard-4"
}

variable "cpu_min_nodes" {
  description = "Minimum nodes of the CPU node pool (0 lets it scale to zero when nothing runs)."
  type        = number
  default     = 0
}

variable "cpu_max_nodes" {
  description = "Maximum nodes of the CPU node pool."
  type        = number
  default     = 8
}

variable "t4_machine_type" {
  description = "Machine type of the T4 node pool; N1 is the family that takes T4s."
  type        = string
  default     = "n1-standard-8"
}

variable "t4_max_nodes" {
  description = "Maximum nodes (one T4 each) of the T4 node pool, which scales from 0. Keep within the project's GPU quota."
  type        = number
  default     = 4
}

variable "t4_spot" {
  description = "Run the T4 node pool on Spot VMs (about a third of the price; nodes can be reclaimed at any time: Ray Train resumes from checkpoints, Serve restarts replicas)."
  type        = bool
  default     = false
}

variable "gpu_driver_version" {
  description = "NVIDIA driver GKE installs on T4 nodes: LATEST or DEFAULT. torch 2.14.1 (CUDA 13.0) needs a 580+ driver, which LATEST gives on current GKE versions."
  type        = string
  default     = "LATEST"

  validation {
    condition     = contains(["LATEST", "DEFAULT"], var.gpu_driver_version)
    error_message = "gpu_driver_version must be LATEST or DEFAULT."
  }
}

variable "bucket_name" {
  description = "Name of the GCS bucket for data, checkpoints, models, MLflow artefacts and the release record (globally unique). Empty: <project_id>-ppd."
  type        = string
  default     = ""
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object version is kept in the bucket."
  type        = number
  default     = 30
}

variable "github_repository" {
  description = "GitHub repository (owner/name) whose workflows may deploy, through Workload Identity Federation."
  type        = string
}

variable "github_repository_owner_id" {
  description = "Numeric id of the repository's owner (gh api repos/OWNER/REPO --jq .owner.id): a deleted and re-created account of the same name has another."
  type        = string
  validation {
    condition     = can(regex("^[0-9]+$", var.github_repository_owner_id))
    error_message = "github_repository_owner_id is the owner's numeric id, not its name."
  }
}

variable "billing_account_id" {
  description = "Billing account ID (XXXXXX-XXXXXX-XXXXXX) the budget is set on."
  type        = string
}

variable "budget_amount" {
  description = "Monthly budget in the billing account's currency; alerts at 90, 100 and 120 % of spend and 100 % of the forecast. The default sizes cost about 1,240 USD a month at list price at rest (docs/capacity.md)."
  type        = number
  default     = 1600
}

variable "budget_alert_email" {
  description = "E-mail address that receives the budget alerts."
  type        = string
}

variable "deletion_protection" {
  description = "Refuse to destroy the cluster (set false before `terraform destroy`)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels put on every resource that takes labels."
  type        = map(string)
  default = {
    app = "product-photo-detector"
  }
}

variable "redis_memory_gb" {
  description = "Size of the Memorystore Redis that keeps the Ray GCS's state (1 GB is the smallest)."
  type        = number
  default     = 1
}

variable "binauthz_enforcement_mode" {
  description = "Binary Authorization: ENFORCED_BLOCK_AND_AUDIT_LOG refuses unlisted images, DRYRUN_AUDIT_LOG_ONLY only logs them."
  type        = string
  default     = "ENFORCED_BLOCK_AND_AUDIT_LOG"
  validation {
    condition     = contains(["ENFORCED_BLOCK_AND_AUDIT_LOG", "DRYRUN_AUDIT_LOG_ONLY"], var.binauthz_enforcement_mode)
    error_message = "binauthz_enforcement_mode is ENFORCED_BLOCK_AND_AUDIT_LOG or DRYRUN_AUDIT_LOG_ONLY."
  }
}

variable "binauthz_allowed_images" {
  description = "Image name patterns admitted besides this project's ppd repository: the KubeRay operator and kube-prometheus-stack."
  type        = list(string)
  default = [
    "quay.io/kuberay/*",
    "quay.io/prometheus/*",
    "quay.io/prometheus-operator/*",
    "quay.io/kiwigrid/*",
    "docker.io/grafana/*",
    "registry.k8s.io/kube-state-metrics/*",
    "registry.k8s.io/ingress-nginx/kube-webhook-certgen*",
  ]
}
