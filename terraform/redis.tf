# The Ray GCS's store (k8s/templates/rayservice.base.yaml, gcsFaultToleranceOptions): a
# Memorystore for Redis instance with a replica in another zone and automatic failover
# (STANDARD_HA), AUTH and TLS, reached from the cluster's VPC by direct peering. With it a
# restarted head gets the cluster's state back (actors, placement groups, Serve's controller
# checkpoint) and the workers keep serving meanwhile. KubeRay deletes a cluster's keys when it
# deletes the cluster. 1 GB is far more than the GCS of one RayService and a few RayJobs holds.
resource "google_redis_instance" "gcs" {
  name               = "ppd-gcs"
  display_name       = "Ray GCS fault tolerance (ppd)"
  tier               = "STANDARD_HA"
  memory_size_gb     = var.redis_memory_gb
  region             = var.region
  location_id        = var.zone
  authorized_network = google_compute_network.vpc.id
  connect_mode       = "DIRECT_PEERING"
  redis_version      = "REDIS_7_2"

  auth_enabled            = true                    # the AUTH string goes into Secret ppd/ppd-redis
  transit_encryption_mode = "SERVER_AUTHENTICATION" # TLS on port 6378; Ray's rediss:// address

  persistence_config {
    persistence_mode    = "RDB" # snapshots survive a full instance restart
    rdb_snapshot_period = "ONE_HOUR"
  }

  maintenance_policy {
    weekly_maintenance_window {
      day = "SUNDAY"
      start_time {
        hours   = 3
        minutes = 0
      }
    }
  }

  labels     = var.labels
  depends_on = [google_project_service.enabled]
}
