# The Docker repository for the ppd-cpu and ppd-gpu images (docker/Dockerfile), pushed by the
# images workflow and pulled by the nodes.
resource "google_artifact_registry_repository" "ppd" {
  # checkov:skip=CKV_GCP_84: the images hold code and public packages only, no data or secrets; Google-managed encryption
  repository_id = "ppd"
  location      = var.region
  format        = "DOCKER"
  description   = "Product Photo Detector images (Ray 2.60.0, CPU and T4)"
  labels        = var.labels

  docker_config {
    immutable_tags = true # a tag (the git commit) always names the same image
  }

  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }
  cleanup_policies {
    id     = "delete-old-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "604800s"
    }
  }

  depends_on = [google_project_service.enabled]
}
