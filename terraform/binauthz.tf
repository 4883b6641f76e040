# Binary Authorization: the cluster (gke.tf, PROJECT_SINGLETON_POLICY_ENFORCE) admits only
# images from this project's ppd repository (built by the images workflow from a commit CI
# passed), the third-party images the operator installs by name (docs/deploy.md, steps 8-9),
# and Google's own GKE system images (global policy). Anything else (a typo'd or public image
# in a manifest, an image pushed elsewhere) is refused and the refusal audit-logged.
# var.binauthz_enforcement_mode = "DRYRUN_AUDIT_LOG_ONLY" only logs: use it while adding a
# chart whose images are not listed here, then add them.
resource "google_binary_authorization_policy" "ppd" {
  project                       = var.project_id
  global_policy_evaluation_mode = "ENABLE" # GKE's system images, maintained by Google

  dynamic "admission_whitelist_patterns" {
    for_each = concat(
      ["${var.region}-docker.pkg.dev/${var.project_id}/ppd/*"],
      var.binauthz_allowed_images,
    )
    content {
      name_pattern = admission_whitelist_patterns.value
    }
  }

  default_admission_rule {
    evaluation_mode  = "ALWAYS_DENY"
    enforcement_mode = var.binauthz_enforcement_mode
  }

  depends_on = [google_project_service.enabled]
}
