# One bucket for everything the cluster keeps: data/ (training sets), ray_results/ (Ray Train
# and Tune checkpoints), models/ (serving checkpoints), mlflow/ (MLflow artefacts) and
# releases/ (the serving release record of k8s/release.sh). Versioning keeps overwritten
# objects (every earlier release record) for noncurrent_version_days.
locals {
  bucket_name = var.bucket_name != "" ? var.bucket_name : "${var.project_id}-ppd"
}

resource "google_storage_bucket" "ppd" {
  # checkov:skip=CKV_GCP_62: access is logged by Cloud Audit Logs (DATA_READ/DATA_WRITE for storage, below), not by a second log bucket
  name                        = local.bucket_name
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = var.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  depends_on = [google_project_service.enabled]
}

# Who read or wrote which object, for the bucket above (Cloud Audit Logs, Data Access).
resource "google_project_iam_audit_config" "storage" {
  project = var.project_id
  service = "storage.googleapis.com"

  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}
